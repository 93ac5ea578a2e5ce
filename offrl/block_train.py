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
`offrl.fused_linear.linear_rows`), attention as `offrl.nn.attention_qkv_forward`. One difference
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
    the block's settings, then its 12 parameters in `block_parameters` order. With `rows`
    (a slice of the L positions) in the settings, the block's output is only those rows
    (B, Lr, d), and only their queries, attention output and MLP are computed."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bias: torch.Tensor, spec: tuple[Any, ...],
                *params: torch.Tensor) -> torch.Tensor:
        from offrl.nn import attention_qkv_forward

        heads, p_attn, p_attn_out, p_mlp, eps1, eps2, gen_attn_out, gen_mlp, rows = spec
        w_ln1, b_ln1, w_qkv, b_qkv, w_out, b_out, w_ln2, b_ln2, w_fc, b_fc, w_proj, b_proj = params
        b, length, d = x.shape
        cd, xd = compute_dtype(x), x.dtype
        with torch.autocast(x.device.type, enabled=False):
            ws = [w.to(cd) for w in (w_qkv, w_out, w_fc, w_proj)]
            bs = [v.to(cd) for v in (b_qkv, b_out, b_fc, b_proj)]
            x0 = x.reshape(-1, d)
            h1, mean1, rstd1 = torch.native_layer_norm(x0, (d,), w_ln1, b_ln1, eps1)
            h1 = h1.to(cd)
            if rows is None:
                qkv = linear_rows(h1, ws[0], bs[0], False).view(b, length, 3 * d)
                q, k, v = qkv.split(d, dim=-1)
                h1q, xq = None, x0
            else:  # keys and values of every row, queries of the selected rows only
                kv = linear_rows(h1, ws[0][d:], bs[0][d:], False).view(b, length, 2 * d)
                k, v = kv.split(d, dim=-1)
                h1q = h1.view(b, length, d)[:, rows].reshape(-1, d)  # (B*Lr, d)
                q = linear_rows(h1q, ws[0][:d], bs[0][:d], False).view(b, -1, d)
                xq = x[:, rows].reshape(-1, d)  # the residual stream of the selected rows
                bias = bias[:, rows]
            att, att_saved, att_meta = attention_qkv_forward(
                q, k, v, bias, heads, p_attn, None)
            att = att.reshape(-1, d)
            a = linear_rows(att, ws[1], bs[1], False)
            m1 = _scaled_keep_mask(tuple(a.shape), p_attn_out, xd, x.device, gen_attn_out)
            x1 = xq + a if m1 is None else torch.addcmul(xq, a, m1)
            h2, mean2, rstd2 = torch.native_layer_norm(x1, (d,), w_ln2, b_ln2, eps2)
            h2 = h2.to(cd)
            f = linear_rows(h2, ws[2], bs[2], True)
            o = linear_rows(f, ws[3], bs[3], False)
            m2 = _scaled_keep_mask(tuple(o.shape), p_mlp, xd, x.device, gen_mlp)
            y = x1 + o if m2 is None else torch.addcmul(x1, o, m2)
        ctx.save_for_backward(x0, x1, mean1, rstd1, mean2, rstd2, h1, h1q, att, h2, f, m1, m2,
                              w_ln1, b_ln1, w_ln2, b_ln2, *ws, *att_saved)
        ctx.att_meta, ctx.rows, ctx.shape = att_meta, rows, (b, length, d)
        ctx.param_dtypes = [t.dtype for t in params]
        return y.view(b, -1, d)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from offrl.nn import attention_qkv_backward

        (x0, x1, mean1, rstd1, mean2, rstd2, h1, h1q, att, h2, f, m1, m2,
         w_ln1, b_ln1, w_ln2, b_ln2, w_qkv, w_out, w_fc, w_proj, *att_saved) = ctx.saved_tensors
        b, length, d = ctx.shape
        rows = ctx.rows
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
            gq, gk, gv = attention_qkv_backward(att_saved, ctx.att_meta,
                                                gatt.view(b, -1, d))
            if rows is None:
                gh1, gw_qkv, gb_qkv = linear_rows_backward(
                    torch.cat([gq, gk, gv], dim=-1).view(-1, 3 * d), h1, w_qkv, None,
                    _NEED_ALL)
            else:
                gh1, gw_kv, gb_kv = linear_rows_backward(
                    torch.cat([gk, gv], dim=-1).view(-1, 2 * d), h1, w_qkv[d:], None,
                    _NEED_ALL)
                gh1q, gw_q, gb_q = linear_rows_backward(
                    gq.reshape(-1, d), h1q, w_qkv[:d], None, _NEED_ALL)
                gh1 = gh1.to(xd)  # the two parts summed in x's dtype, not rounded to bf16
                gh1.view(b, length, d)[:, rows] += gh1q.view(b, -1, d)
                gw_qkv, gb_qkv = torch.cat([gw_q, gw_kv]), torch.cat([gb_q, gb_kv])
            gx0, gw_ln1, gb_ln1 = torch.ops.aten.native_layer_norm_backward(
                gh1.to(xd), x0, (d,), mean1, rstd1, w_ln1, b_ln1, [True, True, True])
            if rows is None:
                gx = gx0.add_(g1)
            else:  # the residual reaches only the selected rows
                gx = gx0
                gx.view(b, length, d)[:, rows] += g1.view(b, -1, d)
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


def block_train_forward(block: Any, x: torch.Tensor, bias: torch.Tensor,
                        rows: slice | None = None) -> torch.Tensor:
    """`TransformerBlock.forward(x, mask)[0][:, rows]` in training through `_BlockFunction`;
    `bias` is `offrl.nn.attention_bias_rows` of the mask."""
    attn, mlp = block.attn, block.mlp
    spec = (attn.num_heads, attn.attn_dropout, attn.resid_dropout.p, mlp.dropout.p,
            block.ln1.eps, block.ln2.eps, attn.resid_dropout.generator, mlp.dropout.generator,
            rows)
    return _BlockFunction.apply(x, bias, spec, *block_parameters(block))
