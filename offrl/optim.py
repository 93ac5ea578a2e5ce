"""Adam and AdamW with a lean step: the same fused kernel, without torch's per-call bookkeeping.

torch.optim's fused Adam(W) step enters a profiler/hook wrapper, walks every parameter's
state, and regroups all tensors by device and dtype on every call: on CPU ~70 us of Python
per step for a 6-tensor MLP, about 5% of a behavior-cloning update at 1 thread. `Adam` and
`AdamW` here let torch's own step run the first time (it creates the state), then keep lists
of the same state tensors and call the same kernel (`torch._fused_adam_` / `_fused_adamw_`,
after the same `_foreach_add_` of the step counters) on them directly: bit-identical updates
and the same `state_dict`. Anything the lean path does not cover falls back to torch's step:
a closure, step hooks (the optimizer's own or global ones), parameters without a gradient,
amsgrad / maximize / capturable / differentiable, tensors of several devices or dtypes, a
gradient scaler's `grad_scale` / `found_inf`, or a tensor learning rate. `zero_grad()` (with
its default `set_to_none=True`) sets the gradients to None without the profiler wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import optimizer as _optimizer


class _LeanStep:
    """Mixin for torch.optim.Adam / AdamW (see the module docstring)."""

    _base: type[torch.optim.Adam]  # the torch class whose step is the fallback
    param_groups: list[dict[str, Any]]
    state: dict[torch.Tensor, dict[str, Any]]

    def _reset_lean(self) -> None:
        self._lean: list[tuple[dict[str, Any], list[torch.Tensor], list[torch.Tensor],
                               list[torch.Tensor], list[torch.Tensor]]] | None = None
        self._all_params = [p for g in self.param_groups for p in g["params"]]

    def _build_lean(self) -> None:
        """Cache each group's params and state tensors, or None where the lean path does not
        apply (checked once: the group settings it depends on do not change between steps,
        except `lr`, read at every step)."""
        self._lean = None
        groups = []
        for g in self.param_groups:
            if not g.get("fused") or g["amsgrad"] or g["maximize"] or g["capturable"] \
                    or g["differentiable"]:
                return
            params = list(g["params"])
            if not params:
                continue
            states = [self.state.get(p, {}) for p in params]
            if any("step" not in s for s in states):
                return  # a parameter that has never had a gradient
            if len({(p.device, p.dtype) for p in params}) > 1:
                return
            groups.append((g, params, [s["exp_avg"] for s in states],
                           [s["exp_avg_sq"] for s in states], [s["step"] for s in states]))
        self._lean = groups

    def _torch_step(self, closure: Callable[[], float] | None) -> Any:
        """torch's own step with its profiler/hook wrapper (applied here, since `step` below
        is marked as already wrapped)."""
        base = self._base.step
        if getattr(base, "hooked", False):  # torch wraps a class's step on first use
            base = base.__wrapped__
        out = _optimizer.Optimizer.profile_hook_step(base)(self, closure)
        self._build_lean()
        return out

    def step(self, closure: Callable[[], float] | None = None) -> Any:
        lean = self._lean
        # grad_scale / found_inf: set by torch.amp.GradScaler around each step of a fused
        # optimizer, so checked here, not only when the cache is built.
        if closure is not None or lean is None or self._has_hooks() \
                or getattr(self, "grad_scale", None) is not None \
                or getattr(self, "found_inf", None) is not None \
                or any(isinstance(g["lr"], torch.Tensor) for g, *_ in lean):
            return self._torch_step(closure)
        grads = [[p.grad for p in params] for _, params, *_ in lean]
        if any(gr is None for group in grads for gr in group):
            return self._torch_step(closure)
        with torch.no_grad():
            for (g, params, exp_avgs, exp_avg_sqs, steps), group_grads in zip(
                    lean, grads, strict=True):
                kernel = torch._fused_adamw_ if g["decoupled_weight_decay"] \
                    else torch._fused_adam_
                beta1, beta2 = g["betas"]
                torch._foreach_add_(steps, 1)
                kernel(params, group_grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                       lr=g["lr"], beta1=float(beta1), beta2=float(beta2),
                       weight_decay=g["weight_decay"], eps=g["eps"], maximize=False,
                       grad_scale=None, found_inf=None)
        return None

    step.hooked = True  # type: ignore[attr-defined]  # torch must not wrap it (see _torch_step)

    def _has_hooks(self) -> bool:
        return bool(self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks  # type: ignore[attr-defined]
                    or _optimizer._global_optimizer_pre_hooks
                    or _optimizer._global_optimizer_post_hooks)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            return self._base.zero_grad(self, set_to_none)  # type: ignore[arg-type]
        for p in self._all_params:
            p.grad = None
        return None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._base.load_state_dict(self, state_dict)  # type: ignore[arg-type]
        self._reset_lean()  # new state tensors: rebuilt by the next (torch) step

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._base.add_param_group(self, param_group)  # type: ignore[arg-type]
        self._reset_lean()


class Adam(_LeanStep, torch.optim.Adam):
    """torch.optim.Adam (fused) with the lean step; see the module docstring."""

    _base = torch.optim.Adam

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._reset_lean()


class AdamW(_LeanStep, torch.optim.AdamW):
    """torch.optim.AdamW (fused) with the lean step; see the module docstring."""

    _base = torch.optim.AdamW

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._reset_lean()
