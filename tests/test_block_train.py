"""`offrl.block_train`: a transformer block's training step as one autograd function, against
the same block module by module (`TransformerBlock.fused_training = False`), with the same
dropout masks (same seed, same draw order)."""

from __future__ import annotations

import copy

import pytest
import torch

from offrl.nn import TransformerBlock, attention_bias

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _block(d: int, heads: int, p: float, dtype: torch.dtype, seed: int = 0
           ) -> tuple[TransformerBlock, TransformerBlock]:
    torch.manual_seed(seed)
    fused = TransformerBlock(d, heads, p, "relu").to(dtype)
    for prm in fused.parameters():  # LayerNorm weights/biases away from 1/0: every term counts
        prm.data.add_(0.1 * torch.randn_like(prm))
    plain = copy.deepcopy(fused)
    plain.fused_training = False
    return fused, plain


def _masks(kind: str, b: int, length: int, dtype: torch.dtype) -> torch.Tensor | None:
    if kind == "causal":
        return None
    torch.manual_seed(11)
    keep = (torch.ones(length, length, dtype=torch.bool).tril()
            & ((torch.rand(b, 1, 1, length) > 0.3) | torch.eye(length, dtype=torch.bool)))
    return keep if kind == "bool" else attention_bias(keep, dtype)


def _step(block: TransformerBlock, x0: torch.Tensor, mask: torch.Tensor | None,
          g: torch.Tensor, autocast: bool = False) -> list[torch.Tensor]:
    x = x0.clone().requires_grad_(True)
    torch.manual_seed(5)  # the dropout masks
    with torch.autocast(**BF16, enabled=autocast):
        y, _ = block(x, mask)
        y.backward(g.to(y.dtype))
    return [y.detach(), x.grad] + [p.grad for p in block.parameters()]


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("mask_kind", ["causal", "bool", "additive"])
def test_float64_matches_module_by_module(heads, mask_kind):
    fused, plain = _block(16, heads, 0.2, torch.float64)
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    g = torch.randn(3, 9, 16, dtype=torch.float64)
    mask = _masks(mask_kind, 3, 9, torch.float64)
    out = _step(fused, x, mask, g)
    ref = _step(plain, x, mask, g)
    for a, c in zip(out, ref, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
    fused.eval()  # dropout did something: the training output is not the eval one
    assert not torch.allclose(out[0], fused(x, mask)[0])


def test_grad_fn_and_fallbacks():
    fused, _ = _block(8, 1, 0.1, torch.float32)
    x = torch.randn(2, 6, 8, requires_grad=True)
    assert type(fused(x)[0].grad_fn).__name__ == "_BlockFunctionBackward"
    y, w = fused(x, return_attention=True)  # attention maps: the module path
    assert w is not None and type(y.grad_fn).__name__ != "_BlockFunctionBackward"
    fused.eval()
    assert type(fused(x)[0].grad_fn).__name__ != "_BlockFunctionBackward"
    gelu = TransformerBlock(8, 1, 0.1, "gelu")  # the hand-written backward is ReLU's
    assert type(gelu(x)[0].grad_fn).__name__ != "_BlockFunctionBackward"
    no_attn_dropout = TransformerBlock(8, 1, 0.0, "relu")
    assert type(no_attn_dropout(x)[0].grad_fn).__name__ != "_BlockFunctionBackward"


def test_float32_and_a_branch_without_dropout():
    fused, plain = _block(32, 2, 0.1, torch.float32)
    for b in (fused, plain):  # the MLP branch undropped: the plain residual add
        b.mlp.dropout.p = 0.0
    x, g = torch.randn(4, 12, 32), torch.randn(4, 12, 32)
    for a, c in zip(_step(fused, x, None, g), _step(plain, x, None, g), strict=True):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_as_close_to_float64_as_module_by_module():
    """Under bf16 autocast both paths carry bf16 rounding; against the float64 block (same
    masks) the fused path is no further off than module by module (it rounds less)."""
    fused, plain = _block(64, 1, 0.1, torch.float32)
    exact = copy.deepcopy(plain).double()
    x, g = torch.randn(8, 30, 64), torch.randn(8, 30, 64)
    ref = _step(exact, x.double(), None, g.double())
    out = _step(fused, x, None, g, autocast=True)
    base = _step(plain, x, None, g, autocast=True)
    assert out[0].dtype == torch.float32  # the residual stream stays float32
    for i, (a, c, r) in enumerate(zip(out, base, ref, strict=True)):
        err_fused = ((a.double() - r).norm() / r.norm()).item()
        err_plain = ((c.double() - r).norm() / r.norm()).item()
        assert err_fused < 0.1, (i, err_fused)
        assert err_fused <= 1.5 * err_plain + 1e-4, (i, err_fused, err_plain)


ROWS = slice(1, None, 3)


def _rows_step(block: TransformerBlock, x: torch.Tensor, mask: torch.Tensor | None,
               g: torch.Tensor, use_rows: bool) -> list[torch.Tensor]:
    """Output and gradients of `block` on `ROWS`: with rows=, or the whole block then them."""
    xr = x.clone().requires_grad_(True)
    y, _ = block(xr, mask, rows=ROWS) if use_rows else block(xr, mask)
    y = y if use_rows else y[:, ROWS]
    y.backward(g)
    out = [y.detach(), xr.grad] + [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    return out


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("mask_kind", ["causal", "bool"])
def test_selected_rows_match_the_whole_block_then_the_rows(heads, mask_kind):
    """`rows`: only those positions' queries, attention output and MLP; outputs and every
    gradient equal the whole block's (module by module) restricted to the rows. Dropout
    p = 1e-9 rounds to keeping everything (`dropout_keep_levels`) while still taking the
    fused path."""
    fused, plain = _block(16, heads, 1e-9, torch.float64)
    x = torch.randn(3, 12, 16, dtype=torch.float64)
    g = torch.randn(3, 4, 16, dtype=torch.float64)
    mask = _masks(mask_kind, 3, 12, torch.float64)
    out = _rows_step(fused, x, mask, g, True)
    assert type(fused(x.requires_grad_(), mask, rows=ROWS)[0].grad_fn).__name__ == (
        "_BlockFunctionBackward")
    assert out[0].shape == (3, 4, 16)
    for a, c in zip(out, _rows_step(plain, x.detach(), mask, g, False), strict=True):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)


def test_selected_rows_under_bf16_autocast_as_close_to_float64_as_module_by_module():
    """The rows path under bf16 autocast against the float64 whole block (no element dropped,
    p = 1e-9 as above): no further off than bf16 module by module (whole block, then rows)."""
    fused, plain = _block(64, 1, 1e-9, torch.float32)
    exact = copy.deepcopy(plain).double()
    rows = ROWS
    x, g = torch.randn(8, 30, 64), torch.randn(8, 10, 64)

    def run(block: TransformerBlock, dtype: torch.dtype, autocast: bool) -> list[torch.Tensor]:
        xr = x.to(dtype, copy=True).requires_grad_(True)
        with torch.autocast(**BF16, enabled=autocast):
            y, _ = block(xr, None, rows=rows)
            y.backward(g.to(y.dtype))
        return [y.detach(), xr.grad] + [p.grad for p in block.parameters()]

    ref, out, base = run(exact, torch.float64, False), run(fused, torch.float32, True), run(
        plain, torch.float32, True)
    assert out[0].dtype == torch.float32 and out[0].shape == (8, 10, 64)
    for i, (a, c, r) in enumerate(zip(out, base, ref, strict=True)):
        err_fused = ((a.double() - r).norm() / r.norm()).item()
        err_plain = ((c.double() - r).norm() / r.norm()).item()
        assert 0 < err_fused < 0.1, (i, err_fused)  # > 0: bf16 rounding did happen
        assert err_fused <= 1.5 * err_plain + 1e-4, (i, err_fused, err_plain)


@pytest.mark.parametrize("p", [1e-9, 0.0])  # attention_with_dropout / SDPA
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("mask_kind", ["causal", "bool", "additive"])
@pytest.mark.parametrize("training", [True, False])
def test_module_path_rows_match_the_whole_block_then_the_rows(p, heads, mask_kind, training):
    """The module path (GPUs, GELU, `fused_training = False`) with `rows` computes only those
    queries and MLP rows; outputs and gradients equal the whole block's restricted to them."""
    torch.manual_seed(0)
    block = TransformerBlock(16, heads, p, "relu").double()
    block.fused_training = False
    block.train(training)
    x = torch.randn(3, 12, 16, dtype=torch.float64)
    g = torch.randn(3, 4, 16, dtype=torch.float64)
    mask = _masks(mask_kind, 3, 12, torch.float64)
    outs = [_rows_step(block, x, mask, g, use_rows) for use_rows in (True, False)]
    for a, c in zip(*outs, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
    y, w = block(x, mask, return_attention=True, rows=ROWS)  # maps: whole block, then rows
    assert y.shape == (3, 4, 16) and w.shape == (3, heads, 12, 12)


@pytest.mark.parametrize("fused", [True, False])
def test_dt_training_step_equals_whole_blocks(fused: bool) -> None:
    """The DT's training forward (last block on the state rows only, fused CPU path or module
    path) against the same model written out with whole blocks and the state tokens taken by
    hand: same predictions and gradients, with padded windows. Dropout 1e-9: the training
    paths, nothing dropped."""
    from offrl.algorithms.dt import DecisionTransformer

    torch.manual_seed(0)
    model = DecisionTransformer(5, 3, False, context=6, max_timestep=50, embed_dim=16,
                                num_layers=3, num_heads=2, dropout=1e-9).double().train()
    for block in model.blocks:
        block.fused_training = fused
    b, k = 4, 6
    states = torch.randn(b, k, 5, dtype=torch.float64)
    actions = torch.rand(b, k, 3, dtype=torch.float64) * 2 - 1
    rtg, timesteps = torch.randn(b, k, dtype=torch.float64), torch.randint(0, 50, (b, k))
    mask = torch.arange(k).expand(b, k) >= torch.arange(b)[:, None]  # 0..3 padded steps

    def whole_blocks() -> torch.Tensor:
        x = model.embed_ln(model._tokens(states, actions, rtg, timesteps))  # (B, 3K, h)
        key_ok = mask.repeat_interleave(3, dim=1)
        eye = torch.eye(3 * k, dtype=torch.bool)
        attn = (torch.ones(3 * k, 3 * k, dtype=torch.bool).tril()
                & (key_ok[:, None, :] | eye))[:, None]
        for block in model.blocks:
            x, _ = block(x, attn)
        return model._head(model.ln_f(x.view(b, k, 3, -1)[:, :, 1]))  # the s_t tokens

    outs = []
    for pred_fn in (lambda: model(states, actions, rtg, timesteps, mask), whole_blocks):
        pred = pred_fn()
        ((pred - actions).pow(2).mean(-1)[mask].mean()).backward()
        outs.append([pred.detach()] + [p.grad.clone() for p in model.parameters()])
        model.zero_grad()
    for a, c in zip(*outs, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
