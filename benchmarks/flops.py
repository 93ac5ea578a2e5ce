"""FLOPs of one training update, counted by running it under `FlopCounterMode`.

What is counted: the dense matrix products (mm, addmm, bmm, baddbmm, their in-place forms,
attention) of the forward and backward passes, 2 FLOPs per multiply-add, as torch's flop
counter does; elementwise ops, norms and optimizer steps are not (they are memory-bound and
small next to the matmuls here). Attention counts the full L x L products whatever the
causal mask, so implementations that do the same work count the same. Torch's counter has no
formula for the CPU flash-attention kernel (the `is_causal` fast path of
`scaled_dot_product_attention`); `count_flops` adds one, so a model counts the same
whichever SDPA backend runs it.

This file must stay importable without offrl: the d3rlpy worker (a separate venv) uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _bmm(b: int, m: int, k: int, n: int) -> int:
    return 2 * b * m * k * n


def _attention_shapes(query: Sequence[int], key: Sequence[int],
                      value: Sequence[int]) -> tuple[int, int, int, int, int]:
    b, h, lq, d = query
    lk, dv = key[-2], value[-1]
    return b * h, lq, lk, d, dv


def _cpu_flash_forward(query: Sequence[int], key: Sequence[int], value: Sequence[int],
                       *args: Any, **kwargs: Any) -> int:
    bh, lq, lk, d, dv = _attention_shapes(query, key, value)
    return _bmm(bh, lq, d, lk) + _bmm(bh, lq, lk, dv)  # scores, then weights @ V


def _cpu_flash_backward(grad_out: Sequence[int], query: Sequence[int], key: Sequence[int],
                        value: Sequence[int], *args: Any, **kwargs: Any) -> int:
    bh, lq, lk, d, dv = _attention_shapes(query, key, value)
    # recomputed scores, dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q
    return (_bmm(bh, lq, d, lk) + _bmm(bh, lk, lq, dv) + _bmm(bh, lq, dv, lk)
            + _bmm(bh, lq, lk, d) + _bmm(bh, lk, lq, d))


def _addmm_inplace(self_shape: Sequence[int], a: Sequence[int], b: Sequence[int],
                   *args: Any, **kwargs: Any) -> int:
    return _bmm(1, a[0], a[1], b[1])


def _baddbmm_inplace(self_shape: Sequence[int], a: Sequence[int], b: Sequence[int],
                     *args: Any, **kwargs: Any) -> int:
    return _bmm(a[0], a[1], a[2], b[2])


# Torch's counter knows addmm and baddbmm (and their out= forms) but not the in-place ones,
# which offrl's chunked critic uses to accumulate weight gradients.
CUSTOM_FORMULAS: dict[Any, Callable[..., int]] = {
    aten.addmm_: _addmm_inplace, aten.baddbmm_: _baddbmm_inplace}
if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
    CUSTOM_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_forward
    CUSTOM_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
        _cpu_flash_backward)


def count_flops(fn: Callable[[], Any]) -> int:
    """Matmul FLOPs executed by `fn()` (forward and backward), counted while it runs."""
    with FlopCounterMode(display=False, custom_mapping=CUSTOM_FORMULAS) as counter:
        fn()
    return int(counter.get_total_flops())


def mlp_update_flops(batch: int, dims: Sequence[int], input_requires_grad: bool = False) -> int:
    """Analytic matmul FLOPs of one forward + backward pass of a plain MLP with layer widths
    `dims` (input, hidden..., output) on `batch` rows: per layer 2*B*in*out for the forward,
    as much for the weight gradient, and as much again for the input gradient, except for
    the first layer when the input needs no gradient (autograd skips that product)."""
    total = 0
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layer = 2 * batch * d_in * d_out
        total += 3 * layer if (i > 0 or input_requires_grad) else 2 * layer
    return total
