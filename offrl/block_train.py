"""The training step of a transformer block (`offrl.nn.TransformerBlock`: pre-LayerNorm, ReLU
MLP, dropout) as one autograd function on CPU, forward and backward written out.

Why: a DT block is ~30 autograd nodes and ~10 module calls, each with its own dispatch,
autocast and bookkeeping costs, which a bf16 update on an AMX CPU (where the matmuls are
cheap) pays ~7 ms of per update at any batch size. Here one node does the same math, with
the casts, residual adds and dropout products fused where torch has an op for it.

The math is `TransformerBlock.forward` in training:
    x1 = x + drop(out_proj(attention(ln1(x)))),  y = x1 + drop(proj(relu(fc(ln2(x1))))),
with the same dropout masks in the same order (attention weights, then the two branches;
`offrl.nn.dropout_mask`). Numerics as under autograd: LayerNorms and the residual stream in
x's dtype, linears in the compute dtype (bf16 under CPU bf16 autocast, through
`offrl.fused_linear.linear_rows`), attention as `offrl.nn.attention_forward`. One difference
under bf16: a dropped branch joins the stream as x + branch * (mask / P(keep)) computed in
float32, where autograd's path first rounded branch / P(keep) to bf16 (and the same for the
branch's gradient); fp32 and fp64 match autograd to rounding (tested).
"""

from __future__ import annotations

from typing import Any

import torch

from offrl.fused_linear import linear_rows, linear_rows_backward

_NEED_ALL = (True, True, True)


def _scaled_keep_mask(shape: tuple[int, ...], p: float, dtype: torch.dtype,
                      device: torch.device, generator: torch.Generator | None
                      ) -> torch.Tensor | None:
    """Dropout's mask / P(keep) in `dtype`, None when p == 0 (nothing dropped)."""
    from offrl.nn import dropout_mask

    if p == 0.0:
        return None
    mask, scale = dropout_mask(shape, p, dtype, device, generator)
    return mask.mul_(scale)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The matmul dtype of a block on `x`: autocast's when it is on for x's device."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class _BlockFunction(torch.autograd.Function):
    """See the module docstring. Inputs: x (B, L, d), the attention bias (1 or B*H, L, L),
    the block's settings, then its 12 parameters in `block_parameters` order."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bias: torch.Tensor, spec: tuple[Any, ...],
                *params: torch.Tensor) -> torch.Tensor:
        from offrl.nn import attention_forward

        heads, p_attn, p_attn_out, p_mlp, eps1, eps2, gen_attn_out, gen_mlp = spec
        w_ln1, b_ln1, w_qkv, b_qkv, w_out, b_out, w_ln2, b_ln2, w_fc, b_fc, w_proj, b_proj = params
        b, length, d = x.shape
        cd, xd = compute_dtype(x), x.dtype
        with torch.autocast(x.device.type, enabled=False):
            ws = [w.to(cd) for w in (w_qkv, w_out, w_fc, w_proj)]
            bs = [v.to(cd) for v in (b_qkv, b_out, b_fc, b_proj)]
            x0 = x.reshape(-1, d)
            h1, mean1, rstd1 = torch.native_layer_norm(x0, (d,), w_ln1, b_ln1, eps1)
            h1 = h1.to(cd)
            qkv = linear_rows(h1, ws[0], bs[0], False)
            att, att_saved, att_meta = attention_forward(
                qkv.view(b, length, 3 * d), bias, heads, p_attn, None)
            att = att.reshape(-1, d)
            a = linear_rows(att, ws[1], bs[1], False)
            m1 = _scaled_keep_mask(tuple(a.shape), p_attn_out, xd, x.device, gen_attn_out)
            x1 = x0 + a if m1 is None else torch.addcmul(x0, a, m1)
            h2, mean2, rstd2 = torch.native_layer_norm(x1, (d,), w_ln2, b_ln2, eps2)
            h2 = h2.to(cd)
            f = linear_rows(h2, ws[2], bs[2], True)
            o = linear_rows(f, ws[3], bs[3], False)
            m2 = _scaled_keep_mask(tuple(o.shape), p_mlp, xd, x.device, gen_mlp)
            y = x1 + o if m2 is None else torch.addcmul(x1, o, m2)
        ctx.save_for_backward(x0, x1, mean1, rstd1, mean2, rstd2, h1, att, h2, f, m1, m2,
                              w_ln1, b_ln1, w_ln2, b_ln2, *ws, *att_saved)
        ctx.att_meta, ctx.eps = att_meta, (eps1, eps2)
        ctx.param_dtypes = [t.dtype for t in params]
        return y.view(b, length, d)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from offrl.nn import attention_backward

        (x0, x1, mean1, rstd1, mean2, rstd2, h1, att, h2, f, m1, m2,
         w_ln1, b_ln1, w_ln2, b_ln2, w_qkv, w_out, w_fc, w_proj, *att_saved) = ctx.saved_tensors
        b, length, d3 = ctx.att_meta[0]
        d = d3 // 3
        cd, xd = w_qkv.dtype, x0.dtype
        with torch.autocast(g.device.type, enabled=False):
            g = g.reshape(-1, d).to(xd)  # dL/dy, also dL/dx1 through the residual
            go = (g if m2 is None else g * m2).to(cd)
            gf, gw_proj, gb_proj = linear_rows_backward(go, f, w_proj, None, _NEED_ALL)
            gh2, gw_fc, gb_fc = linear_rows_backward(gf, h2, w_fc, f, _NEED_ALL)
            gx1, gw_ln2, gb_ln2 = torch.ops.aten.native_layer_norm_backward(
                gh2.to(xd), x1, (d,), mean2, rstd2, w_ln2, b_ln2, [True, True, True])
            g1 = gx1.add_(g)  # dL/dx1: the LayerNorm branch plus the residual
            ga = (g1 if m1 is None else g1 * m1).to(cd)
            gatt, gw_out, gb_out = linear_rows_backward(ga, att, w_out, None, _NEED_ALL)
            gqkv = attention_backward(att_saved, ctx.att_meta, gatt.view(b, length, d))
            gh1, gw_qkv, gb_qkv = linear_rows_backward(
                gqkv.reshape(-1, d3), h1, w_qkv, None, _NEED_ALL)
            gx0, gw_ln1, gb_ln1 = torch.ops.aten.native_layer_norm_backward(
                gh1.to(xd), x0, (d,), mean1, rstd1, w_ln1, b_ln1, [True, True, True])
            gx = gx0.add_(g1)
        grads = [gw_ln1, gb_ln1, gw_qkv, gb_qkv, gw_out, gb_out, gw_ln2, gb_ln2,
                 gw_fc, gb_fc, gw_proj, gb_proj]
        grads = [t.to(dt) for t, dt in zip(grads, ctx.param_dtypes, strict=True)]
        return (gx.view(b, length, d), None, None, *grads)


def block_parameters(block: Any) -> tuple[torch.Tensor, ...]:
    """A `TransformerBlock`'s parameters in `_BlockFunction`'s order."""
    attn, mlp = block.attn, block.mlp
    return (block.ln1.weight, block.ln1.bias, attn.qkv.weight, attn.qkv.bias,
            attn.out_proj.weight, attn.out_proj.bias, block.ln2.weight, block.ln2.bias,
            mlp.fc.weight, mlp.fc.bias, mlp.out_proj.weight, mlp.out_proj.bias)


def block_train_forward(block: Any, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`TransformerBlock.forward(x, mask)` in training through `_BlockFunction`; `bias` is
    `offrl.nn.attention_bias_rows` of the mask."""
    attn, mlp = block.attn, block.mlp
    spec = (attn.num_heads, attn.attn_dropout, attn.resid_dropout.p, mlp.dropout.p,
            block.ln1.eps, block.ln2.eps, attn.resid_dropout.generator, mlp.dropout.generator)
    return _BlockFunction.apply(x, bias, spec, *block_parameters(block))
