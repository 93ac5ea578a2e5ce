"""`offrl.nn.dropout` (masks from 16-bit random lanes) and `attention_with_dropout` (the
training path of `CausalSelfAttention`) against their definitions and against torch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from offrl.nn import (
    CausalSelfAttention,
    Dropout,
    attention_with_dropout,
    dropout,
    dropout_keep_levels,
    dropout_mask,
)

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_and_expectation(p):
    torch.manual_seed(0)
    n = 1 << 20
    out = dropout(torch.ones(n), p)
    keep_prob = dropout_keep_levels(p) / 2**16
    assert abs(keep_prob - (1 - p)) <= 2**-17  # p rounded to a multiple of 2**-16
    kept = out != 0
    # kept elements are scaled by exactly 1 / P(keep): E[out] = x up to fp32 rounding
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / keep_prob))
    sigma = math.sqrt(keep_prob * (1 - keep_prob) / n)
    assert abs(kept.float().mean().item() - keep_prob) < 5 * sigma
    assert abs(out.mean().item() - 1.0) < 5 * sigma / keep_prob
    # the four lanes of one 64-bit word, and neighbours, decide independently
    pairs = kept.view(-1, 4)
    for i, j in [(0, 1), (1, 2), (2, 3), (0, 3)]:
        both = (pairs[:, i] & pairs[:, j]).float().mean().item()
        assert abs(both - keep_prob**2) < 5 * math.sqrt(keep_prob**2 / pairs.shape[0])
    assert abs(kept[::2].float().mean().item() - kept[1::2].float().mean().item()) < 10 * sigma


def test_seed_and_generator_determinism():
    x = torch.randn(7, 33)  # numel not a multiple of 4: the last word is partly used
    torch.manual_seed(3)
    a = dropout(x, 0.3)
    torch.manual_seed(3)
    b = dropout(x, 0.3)
    c = dropout(x, 0.3)  # the stream moved on
    assert torch.equal(a, b) and not torch.equal(b, c)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.manual_seed(0)
    d = Dropout(0.3, generator=g1)(x)
    torch.manual_seed(1)  # the default generator does not matter when one is given
    assert torch.equal(d, Dropout(0.3, generator=g2)(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_is_mask_times_scale(dtype):
    x = torch.randn(64, 30, dtype=dtype, requires_grad=True)
    g = torch.randn(64, 30, dtype=dtype)
    torch.manual_seed(1)
    out = dropout(x, 0.25)
    out.backward(g)
    torch.manual_seed(1)
    mask, scale = dropout_mask(x.shape, 0.25, dtype, x.device)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert scale == 2**16 / dropout_keep_levels(0.25)
    # each product correctly rounded from fp32 (for bf16: no bf16 copy of the scale)
    ref = lambda t: (t.float() * mask.float() * scale).to(dtype)  # noqa: E731
    assert torch.equal(out, ref(x.detach()))
    assert torch.equal(x.grad, ref(g))


def test_eval_identity_edge_probabilities_and_errors():
    x = torch.randn(5, 6)
    m = Dropout(0.4).eval()
    assert m(x) is x
    assert dropout(x, 0.0) is x and dropout(x, 0.4, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert torch.equal(dropout(x, 1e-7), x)  # p rounds to 0: nothing dropped, scale 1
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="dropout probability"):
            Dropout(bad)
    assert "p=0.4" in repr(m)


def test_under_bf16_autocast():
    layer = torch.nn.Linear(8, 8)
    drop = Dropout(0.5)
    x = torch.randn(256, 8)
    with torch.autocast(**BF16):
        y = drop(layer(x))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and torch.isfinite(layer.weight.grad).all()
    assert 0.3 < (y == 0).float().mean().item() < 0.7


def sdpa_reference(qkv: torch.Tensor, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    b, length, d3 = qkv.shape
    d = d3 // 3
    q, k, v = qkv.view(b, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    if mask is None:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return y.transpose(1, 2).reshape(b, length, d)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_without_dropout_matches_sdpa(heads, masked):
    torch.manual_seed(0)
    b, length, d = 3, 9, 8
    qkv = torch.randn(b, length, 3 * d, dtype=torch.float64, requires_grad=True)
    mask = None
    if masked:  # causal, some keys hidden, the diagonal always allowed
        mask = (torch.ones(length, length, dtype=torch.bool).tril()
                & ((torch.rand(b, 1, 1, length) > 0.3) | torch.eye(length, dtype=torch.bool)))
    y = attention_with_dropout(qkv, heads, mask, 0.0)
    q2 = qkv.detach().clone().requires_grad_(True)
    y_ref = sdpa_reference(q2, heads, mask)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(qkv.grad, q2.grad)
    if masked:  # an additive float mask gives the same result as the bool one
        bias = torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, -math.inf)
        torch.testing.assert_close(attention_with_dropout(qkv, heads, bias, 0.0), y)


@pytest.mark.parametrize("heads", [1, 2])
def test_attention_dropout_applies_one_mask_to_the_weights(heads):
    """Forward and the hand-written backward against autograd of the definition, with the
    same dropout mask (the mask is the function's first random draw)."""
    torch.manual_seed(0)
    b, length, d = 4, 6, 8
    hd = d // heads
    qkv = torch.randn(b, length, 3 * d, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(7)
    y = attention_with_dropout(qkv, heads, None, 0.2)
    torch.manual_seed(7)
    mask, scale = dropout_mask((b * heads, length, length), 0.2, torch.float64, qkv.device)
    ref_in = qkv.detach().clone().requires_grad_(True)
    q, k, v = ref_in.view(b, length, 3, heads, hd).permute(2, 0, 3, 1, 4).reshape(
        3, b * heads, length, hd)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    w = (q @ k.transpose(1, 2) / math.sqrt(hd)).masked_fill(~causal, -math.inf).softmax(-1)
    y_ref = ((w * mask * scale) @ v).view(b, heads, length, hd).transpose(1, 2).reshape(
        b, length, d)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(qkv.grad, ref_in.grad)


def test_attention_module_bf16_autocast_matches_the_eval_path():
    """Under autocast qkv is bf16; the matmuls run in bf16 and the softmax in fp32 (as
    SDPA's kernels do), so the training path without dropout equals the eval SDPA path
    closely."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(16, 2, dropout=0.1)
    x = torch.randn(2, 12, 16)
    attn.eval()
    with torch.autocast(**BF16):
        ref, _ = attn(x)
    attn.train()
    attn.attn_dropout = 1e-9  # takes the training path; p rounds to 0, no weight dropped
    attn.resid_dropout.p = 0.0
    with torch.autocast(**BF16):
        y, _ = attn(x)
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref.float(), rtol=2e-2, atol=2e-2)
    # gradients stay close to the fp32 ones; parameter gradients are fp32
    grads = []
    for ctx in (torch.autocast(**BF16), torch.autocast("cpu", enabled=False)):
        attn.zero_grad(set_to_none=True)
        with ctx:
            out, _ = attn(x)
            (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        grads.append([p.grad.clone() for p in attn.parameters()])
    for g, g_ref in zip(*grads, strict=True):
        assert g.dtype == torch.float32
        assert ((g - g_ref).norm() / g_ref.norm()).item() < 3e-2
