"""The Decision Transformer's acting shortcuts against the full forward pass:
`predict_last` (exact) and the key/value cache (exact while t < K, and at every t for a
single-layer model, whose keys and values depend on their own token only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from offrl.algorithms import DT
from offrl.algorithms.dt import DecisionTransformer
from tests.algo_helpers import tiny_config, tiny_dataset


@pytest.mark.parametrize("discrete", [False, True])
def test_predict_last_equals_forward(discrete: bool) -> None:
    torch.manual_seed(0)
    model = DecisionTransformer(5, 3, discrete, context=6, max_timestep=50, embed_dim=16,
                                num_layers=3, num_heads=2, dropout=0.1).eval()
    b, k = 5, 6
    states = torch.randn(b, k, 5)
    actions = torch.randint(0, 3, (b, k)) if discrete else torch.rand(b, k, 3) * 2 - 1
    rtg, timesteps = torch.randn(b, k), torch.randint(0, 50, (b, k))
    mask = torch.arange(k).expand(b, k) >= torch.arange(b)[:, None]  # 0..4 padded steps
    with torch.no_grad():
        full = model(states, actions, rtg, timesteps, mask)[:, -1]
        last = model.predict_last(states, actions, rtg, timesteps, mask)
    torch.testing.assert_close(last, full, rtol=1e-5, atol=1e-5)
    # Shorter windows (the start of training batches) and the training-mode guard.
    with torch.no_grad():
        torch.testing.assert_close(model.predict_last(states[:, :2], actions[:, :2], rtg[:, :2],
                                                      timesteps[:, :2], mask[:, :2]),
                                   model(states[:, :2], actions[:, :2], rtg[:, :2],
                                         timesteps[:, :2], mask[:, :2])[:, -1],
                                   rtol=1e-5, atol=1e-5)
    # Unpadded windows take the plain causal path (full=True, or detected when None).
    full_mask = torch.ones(b, k, dtype=torch.bool)
    with torch.no_grad():
        want = model(states, actions, rtg, timesteps, full_mask)[:, -1]
        for full in (None, True):
            torch.testing.assert_close(
                model.predict_last(states, actions, rtg, timesteps, full_mask, full),
                want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(  # and a padded window is not mistaken for a full one
            model.predict_last(states, actions, rtg, timesteps, mask), want, atol=1e-3)
    with pytest.raises(RuntimeError, match="eval"):
        model.train().predict_last(states, actions, rtg, timesteps, mask)


def drive(kind: str, num_layers: int, steps: int = 40, n: int = 4):
    """Run the exact and the cached policy side by side on the same observations, rewards
    and masked resets; yield (t before the step, exact action, cached action) per step."""
    ds = tiny_dataset(kind)
    torch.manual_seed(1)
    algo = DT.from_dataset(tiny_config("dt", num_layers=num_layers, context=4, dropout=0.0), ds)
    sampler = algo.make_sampler(ds, seed=0)
    for _ in range(3):  # move the weights off their init
        algo.update(sampler.sample())
    exact, cached = algo.make_policy(n), algo.make_policy(n)
    assert exact.cache is None
    cached = type(cached)(algo, n, kv_cache=True)
    rng = np.random.default_rng(0)
    rewards = np.zeros(n, np.float32)
    for step in range(steps):
        resets = rng.random(n) < 0.08  # masked resets at different times per env
        if step and resets.any():
            exact.reset(resets, target_return=3.0)
            cached.reset(resets, target_return=3.0)
        t = exact.t.copy()
        obs = rng.normal(size=(n, 3)).astype(np.float32)
        a_exact = exact.act(obs, rewards)
        a_cached = cached.act(obs, rewards)
        # Both continue from the exact action, so later windows stay identical.
        cached.actions[:, -1] = exact.actions[:, -1]
        yield t, a_exact, a_cached
        rewards = rng.normal(size=n).astype(np.float32)


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_kv_cache_exact_for_one_layer(kind: str) -> None:
    for _, a_exact, a_cached in drive(kind, num_layers=1):
        np.testing.assert_allclose(a_cached, a_exact, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_kv_cache_exact_before_window_slides(kind: str) -> None:
    k, compared, differed = 4, 0, 0
    for t, a_exact, a_cached in drive(kind, num_layers=3, steps=60):
        early = t < k
        np.testing.assert_allclose(a_cached[early], a_exact[early], rtol=1e-4, atol=1e-5)
        compared += int(early.sum())
        differed += int((~np.isclose(a_cached[~early], a_exact[~early], atol=1e-5)).sum())
    assert compared >= 20
    if kind == "continuous":  # the documented deviation is real, not a no-op
        assert differed > 0


def test_kv_cache_weights_follow_parameter_updates_and_loads() -> None:
    # The cache keeps transposed copies of the weights (and fuses the value embeddings into
    # one block-diagonal matmul): a policy that outlives updates, or a checkpoint load that
    # restores the same update count, must act as a fresh one does.
    ds = tiny_dataset("continuous")
    torch.manual_seed(2)
    algo = DT.from_dataset(tiny_config("dt", num_layers=2, context=4, dropout=0.0), ds)
    sampler = algo.make_sampler(ds, seed=0)
    old = type(algo.make_policy(2))(algo, 2, kv_cache=True)
    obs = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    old.act(obs, np.zeros(2, np.float32))  # builds the copies
    other = DT.from_state_dict(algo.state_dict())  # same update count, other weights
    for _ in range(3):
        algo.update(sampler.sample())
        other.update(sampler.sample())
    for change in ("update", "load"):
        if change == "load":
            algo.load_state_dict(other.state_dict())  # num_updates stays 3
        old.reset(np.ones(2, dtype=bool))
        fresh = type(old)(algo, 2, kv_cache=True)
        for step in range(3):
            rewards = np.full(2, 0.5 * step, np.float32)
            np.testing.assert_allclose(old.act(obs, rewards), fresh.act(obs, rewards),
                                       rtol=1e-6)
    w = old.cache._weights().embed  # rows: [a, R, s, 1]; column blocks: a_{t-1}, R_t, s_t
    h, a = 16, algo.spaces.act_dim
    torch.testing.assert_close(w[a:a + 1, h:2 * h], algo.model.embed_return.weight.T)
    torch.testing.assert_close(w[a + 1:-1, 2 * h:], algo.model.embed_state.weight.T)
    torch.testing.assert_close(w[-1, 2 * h:], algo.model.embed_state.bias)
    assert float(w[:-1, h:][:a].abs().sum()) == 0.0  # off-diagonal blocks: exact zeros
    assert float(w[a:-1, :h].abs().sum()) == 0.0
