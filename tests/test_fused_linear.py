"""`offrl.fused_linear.linear`: bit-identical to `relu(F.linear(...))` under CPU bf16
autocast (where it takes oneDNN's fused path), plain `F.linear` everywhere else."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from offrl.fused_linear import fused_dtype, linear
from offrl.nn import FeedForward

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)
needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                  reason="torch built without oneDNN")


def _run(fn, x0, w0, b0, g):
    x, w, b = (t.detach().clone().requires_grad_(True) for t in (x0, w0, b0))
    with torch.autocast(**BF16):
        y = fn(x, w, b)
        y.backward(g.to(y.dtype))
    return y, x.grad, w.grad, b.grad


@needs_onednn
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(4, 37, 16, 64), (3840, 128, 512)])  # (*rows, in, out);
# the second is DT's MLP size, where the other order of the weight-gradient product differs
def test_bf16_autocast_bit_identical_to_autograd(relu, shape):
    torch.manual_seed(0)
    *rows, d_in, d_out = shape
    x = torch.randn(*rows, d_in)
    w, b = torch.randn(d_out, d_in) / d_in**0.5, torch.randn(d_out)
    g = torch.randn(*rows, d_out)

    def ref(x, w, b):
        y = F.linear(x, w, b)
        return F.relu(y) if relu else y

    fused = _run(lambda x, w, b: linear(x, w, b, relu=relu), x, w, b, g)
    plain = _run(ref, x, w, b, g)
    assert fused[0].dtype == torch.bfloat16 and fused[0].shape == (*rows, d_out)
    for name, a, c in zip(("y", "dx", "dw", "db"), fused, plain, strict=True):
        assert a.dtype == c.dtype, name
        assert torch.equal(a, c), name  # same matmuls, same dtypes, same order
    if relu:
        assert (fused[0] == 0).any()  # the ReLU was applied


@needs_onednn
def test_bf16_input_and_frozen_parameters():
    """A bf16 input keeps its gradient in bf16; no gradient is made for what needs none."""
    torch.manual_seed(1)
    x = torch.randn(20, 8, dtype=torch.bfloat16, requires_grad=True)
    w, b = torch.randn(5, 8), torch.randn(5)  # no requires_grad
    with torch.autocast(**BF16):
        y = linear(x, w, b, relu=True)
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and w.grad is None and b.grad is None


def test_plain_path_outside_bf16_autocast():
    torch.manual_seed(2)
    x, w, b = torch.randn(6, 4), torch.randn(3, 4), torch.randn(3)
    assert fused_dtype(x) is None
    assert torch.equal(linear(x, w, b, relu=True), F.relu(F.linear(x, w, b)))
    assert torch.equal(linear(x, w, None), F.linear(x, w))
    with torch.autocast("cpu", dtype=torch.float16):  # only bf16 takes the fused path
        assert fused_dtype(x) is None


@needs_onednn
def test_feedforward_under_autocast_matches_layers():
    """FeedForward (ReLU) through the fused path equals its layers applied by hand."""
    torch.manual_seed(3)
    ff = FeedForward(16, dropout=0.0, activation="relu")
    x = torch.randn(2, 5, 16)
    with torch.autocast(**BF16):
        out = ff(x)
        ref = ff.out_proj(F.relu(ff.fc(x)))
    assert torch.equal(out, ref)
