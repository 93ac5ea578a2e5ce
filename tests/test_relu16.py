"""`offrl.relu16`: ReLU and its backward on the int16 bits of 16-bit floats, against torch's
`relu_` and `threshold_backward`."""

from __future__ import annotations

import pytest
import torch

from offrl.relu16 import relu_, relu_backward


def _values(dtype: torch.dtype) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(3, 257, 65).to(dtype)
    x.view(-1)[:7] = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 65000.0, -65000.0, 3.0]).to(dtype)
    return x


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_relu_matches_torch(dtype):
    x = _values(dtype)
    ref = x.clone().relu_()
    out = x.clone()
    assert relu_(out) is out
    assert torch.equal(out, ref)
    if dtype != torch.float32:  # -0.0 became +0.0 (equal values either way)
        assert not (out.view(-1)[:2].view(torch.int16) < 0).any()
    strided = x.clone().transpose(0, 2)  # any layout: the int16 view keeps the strides
    assert torch.equal(relu_(strided), x.clone().transpose(0, 2).relu_())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_relu_backward_matches_threshold_backward(dtype):
    y = relu_(_values(dtype))
    g = _values(dtype).flip(0)  # a gradient of both signs, unrelated to y
    ref = torch.ops.aten.threshold_backward(g, y, 0)
    out = relu_backward(g, y)
    assert out.dtype == dtype and torch.equal(out, ref)
    assert torch.equal(out.view(torch.int16 if dtype != torch.float32 else torch.int32),
                       ref.view(torch.int16 if dtype != torch.float32 else torch.int32))
    assert (out == 0).sum() >= (y == 0).sum()  # masked where the output is 0


def test_negative_nan_becomes_zero_in_the_integer_relu():
    """The documented difference: a NaN with the sign bit set is clamped to 0."""
    x = torch.tensor([float("nan"), 1.0], dtype=torch.bfloat16)
    x.view(torch.int16)[0] |= -32768  # set the sign bit: -NaN
    assert relu_(x.clone())[0].item() == 0.0
    pos = torch.tensor([float("nan")], dtype=torch.bfloat16).abs()
    assert relu_(pos).isnan().all()
