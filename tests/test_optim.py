"""offrl.optim: the lean Adam / AdamW step gives bit-identical parameters and state to torch's
fused optimizers, and falls back to torch's step wherever its shortcut does not apply."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from offrl.optim import Adam, AdamW


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))


def _groups(net: nn.Module) -> list[dict]:
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    return [{"params": weights, "weight_decay": 0.1}, {"params": biases, "weight_decay": 0.0}]


def _train(net: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 1,
           sched: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 5, generator=g)
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()


def _adamw_pair(steps: int) -> tuple[nn.Module, nn.Module, AdamW, torch.optim.AdamW]:
    """Two equal nets, one with the lean AdamW and one with torch's, trained `steps` alike."""
    a, b = _net(), _net()
    oa = AdamW(a.parameters(), lr=1e-2, fused=True)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-2, fused=True)
    _train(a, oa, steps)
    _train(b, ob, steps)
    return a, b, oa, ob


def _same(a: nn.Module, b: nn.Module, oa: torch.optim.Optimizer,
          ob: torch.optim.Optimizer) -> None:
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for k in sa["state"]:
        for name, t in sa["state"][k].items():
            assert torch.equal(t, sb["state"][k][name]), (k, name)


@pytest.mark.parametrize("lean_cls,torch_cls", [(Adam, torch.optim.Adam),
                                                (AdamW, torch.optim.AdamW)])
def test_bit_identical_to_torch_fused_with_groups_and_schedule(lean_cls, torch_cls) -> None:
    a, b = _net(), _net()
    oa = lean_cls(_groups(a), lr=1e-2, fused=True)
    ob = torch_cls(_groups(b), lr=1e-2, fused=True)

    def warmup(step: int) -> float:
        return min(1.0, (step + 1) / 5)

    sa = torch.optim.lr_scheduler.LambdaLR(oa, warmup)
    sb = torch.optim.lr_scheduler.LambdaLR(ob, warmup)
    _train(a, oa, 12, sched=sa)
    _train(b, ob, 12, sched=sb)
    assert oa._lean is not None  # the lean path is what ran after the first step
    _same(a, b, oa, ob)


def test_resumed_state_and_fallbacks_stay_identical() -> None:
    a, b, oa, ob = _adamw_pair(3)
    # load_state_dict (a resumed checkpoint) replaces the state tensors: the cache goes
    a2 = copy.deepcopy(a)
    oa2 = AdamW(a2.parameters(), lr=1e-2, fused=True)
    oa2.load_state_dict(oa.state_dict())
    assert oa2._lean is None
    _train(a2, oa2, 4, seed=2)
    _train(b, ob, 4, seed=2)
    _same(a2, b, oa2, ob)
    # a parameter without a gradient this step: torch's step (it skips that parameter)
    a2[2].bias.requires_grad_(False)
    b[2].bias.requires_grad_(False)
    _train(a2, oa2, 2, seed=3)
    _train(b, ob, 2, seed=3)
    _same(a2, b, oa2, ob)


def test_hooks_and_closures_use_torch_step() -> None:
    net = _net()
    opt = Adam(net.parameters(), lr=1e-2, fused=True)
    _train(net, opt, 2)
    calls = []
    handle = opt.register_step_post_hook(lambda *_: calls.append(1))
    _train(net, opt, 3)
    assert calls == [1, 1, 1]
    handle.remove()
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    glob = register_optimizer_step_pre_hook(lambda *_: calls.append(2))
    try:
        _train(net, opt, 1)
    finally:
        glob.remove()
    assert calls == [1, 1, 1, 2]

    def closure() -> float:
        opt.zero_grad()
        loss = net(torch.ones(2, 5)).pow(2).mean()
        loss.backward()
        return float(loss.detach())

    assert isinstance(opt.step(closure), float)


def test_zero_grad() -> None:
    net = _net()
    opt = AdamW(net.parameters(), lr=1e-2, fused=True)
    _train(net, opt, 1)
    assert all(p.grad is not None for p in net.parameters())
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    extra = nn.Parameter(torch.ones(2))
    opt.add_param_group({"params": [extra]})
    extra.grad = torch.ones(2)
    opt.zero_grad()
    assert extra.grad is None  # groups added later are cleared too


def test_grad_scaler_attributes_use_torch_step() -> None:
    # torch.amp.GradScaler sets grad_scale / found_inf on a fused optimizer around its step:
    # the lean path must not ignore them (here: gradients scaled by 4, no inf found).
    a, b, oa, ob = _adamw_pair(2)
    for net, opt in ((a, oa), (b, ob)):
        net(torch.ones(3, 5)).pow(2).mean().mul(4.0).backward()
        opt.grad_scale, opt.found_inf = torch.tensor(4.0), torch.tensor(0.0)
        opt.step()
        del opt.grad_scale, opt.found_inf
    _same(a, b, oa, ob)
    _train(a, oa, 2)  # and back on the lean path
    _train(b, ob, 2)
    _same(a, b, oa, ob)
