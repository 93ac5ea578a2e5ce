"""The Decision Transformer policy's bookkeeping against a naive reference, the train/act
layout identity, and the resolved defaults and attention hook of `DT`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from offrl.algorithms import DT, DTConfig
from offrl.datasets import EpisodeDataset
from tests.algo_helpers import tiny_config, tiny_dataset


def trained_dt(kind: str, **overrides) -> tuple[DT, EpisodeDataset]:
    ds = tiny_dataset(kind)
    torch.manual_seed(0)
    algo = DT.from_dataset(tiny_config("dt", **overrides), ds)
    sampler = algo.make_sampler(ds, seed=0)
    for _ in range(5):
        algo.update(sampler.sample())
    return algo, ds


class NaiveContext:
    """Per-env Python lists of every step since the last reset; the model window is the
    last K entries, left-padded with zeros (mask False, timestep 0)."""

    def __init__(self, algo: DT, n: int) -> None:
        self.algo, self.k = algo, algo.config.context
        self.scale = algo.resolved["return_scale"]
        self.max_t = algo.resolved["max_timestep"]
        self.steps: list[list[dict]] = [[] for _ in range(n)]
        self.rtg = [0.0] * n
        self.reset(np.ones(n, dtype=bool), None)

    def reset(self, mask: np.ndarray, target: float | None) -> None:
        for i in np.flatnonzero(mask):
            self.steps[i] = []
            self.rtg[i] = self.algo.resolved["target_return"] if target is None else target

    def observe(self, obs: np.ndarray, last_reward: np.ndarray) -> None:
        for i, hist in enumerate(self.steps):
            if hist:  # not the first step since reset
                self.rtg[i] -= float(last_reward[i])
            state = ((obs[i] - self.algo.normalizer.mean) / self.algo.normalizer.std)
            hist.append({"state": state.astype(np.float32), "rtg": self.rtg[i] / self.scale,
                         "t": min(len(hist), self.max_t - 1), "action": None})

    def record(self, unit_actions: np.ndarray) -> None:
        for i, hist in enumerate(self.steps):
            hist[-1]["action"] = unit_actions[i]

    def window(self, i: int, act_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        last = self.steps[i][-self.k:]
        pad = self.k - len(last)
        zero_action = np.zeros(act_shape, np.float32 if act_shape else np.int64)
        return {
            "states": np.array([np.zeros(3, np.float32)] * pad + [s["state"] for s in last]),
            "actions": np.array([zero_action] * pad + [s["action"] for s in last]),
            "returns_to_go": np.array([0.0] * pad + [s["rtg"] for s in last], np.float32),
            "timesteps": np.array([0] * pad + [s["t"] for s in last]),
            "mask": np.array([False] * pad + [True] * len(last)),
        }


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_context_and_return_to_go_match_a_naive_reference(kind):
    algo, _ = trained_dt(kind)
    n, k = 3, algo.config.context
    assert algo.resolved["max_timestep"] == 12  # the longest tiny episode: timesteps clamp
    policy, ref = algo.make_policy(n), NaiveContext(algo, n)
    buffers = [b.data_ptr() for b in policy._buffers]
    rng = np.random.default_rng(0)
    resets = {8: (np.array([False, True, False]), 7.5), 15: (np.array([True, False, True]), None),
              16: (np.array([False, False, True]), -3.0)}
    for step in range(30):
        if step in resets:
            mask, target = resets[step]
            policy.reset(mask, target)
            ref.reset(mask, target)
        obs = rng.normal(loc=[1.0, -2.0, 0.5], size=(n, 3)).astype(np.float32)
        reward = rng.normal(size=n) * 3
        action = policy.act(obs, reward)
        ref.observe(obs, reward)
        unit = (policy.actions[:, -1].numpy() if kind == "discrete"
                else algo.actions.to_unit(torch.as_tensor(action)).numpy())
        ref.record(unit)
        for i in range(n):
            want = ref.window(i, () if kind == "discrete" else (2,))
            np.testing.assert_allclose(policy.states[i].numpy(), want["states"], atol=1e-5)
            np.testing.assert_allclose(policy.actions[i].numpy(), want["actions"], atol=1e-5)
            np.testing.assert_allclose(policy.returns_to_go[i].numpy(), want["returns_to_go"],
                                       rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(policy.timesteps[i].numpy(), want["timesteps"])
            np.testing.assert_array_equal(policy.mask[i].numpy(), want["mask"])
            assert ref.rtg[i] == pytest.approx(policy.raw_return_to_go[i], abs=1e-9)
        # The action is the model's output on the reference window (placeholder action at K-1).
        win = [ref.window(i, () if kind == "discrete" else (2,)) for i in range(n)]
        with torch.no_grad():
            algo.model.eval()
            inputs = {key: torch.as_tensor(np.stack([w[key] for w in win])) for key in win[0]}
            inputs["actions"][:, -1] = 0
            pred = algo.model(**inputs)[:, -1]
        if kind == "discrete":
            np.testing.assert_array_equal(action, pred.argmax(-1).numpy())
        else:
            np.testing.assert_allclose(algo.actions.to_unit(torch.as_tensor(action)).numpy(),
                                       pred.numpy(), atol=1e-5)
    assert [b.data_ptr() for b in policy._buffers] == buffers  # preallocated, never regrown
    assert policy.states.shape == (n, k, 3)


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_policy_window_equals_the_sampler_window(kind):
    """Acting through an episode with the data's actions forced into the buffer reproduces,
    step by step, the model inputs the trainer builds from `SequenceSampler` windows."""
    algo, ds = trained_dt(kind)
    sampler = algo.make_sampler(ds, seed=0)
    e = 1  # 12 steps, longer than the context
    ep, start = ds.episode(e), int(ds.episode_starts[e])
    policy = algo.make_policy(1)
    policy.reset(np.ones(1, dtype=bool), target_return=float(ep.episode_return))
    algo.model.eval()
    for j in range(ep.length):
        last_r = np.array([ep.rewards[j - 1] if j else 123.0])  # ignored on the first step
        action = policy.act(ep.observations[j][None], last_r)
        batch = sampler.gather(torch.tensor([start + j]))
        states, actions, rtg, timesteps, mask = algo.prepare(batch)
        with torch.no_grad():
            pred = algo.model(states, actions, rtg, timesteps, mask)[0, -1]
        # The state token cannot see the action at K-1: same prediction as the policy's.
        if kind == "discrete":
            assert int(action[0]) == int(pred.argmax())
        else:
            np.testing.assert_allclose(algo.actions.to_unit(torch.as_tensor(action))[0].numpy(),
                                       pred.numpy(), atol=1e-5)
        policy.actions[0, -1] = actions[0, -1]  # teacher forcing: the data's action
        np.testing.assert_allclose(policy.states[0], states[0], atol=1e-5)
        np.testing.assert_allclose(policy.actions[0], actions[0], atol=1e-6)
        np.testing.assert_allclose(policy.returns_to_go[0], rtg[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(policy.timesteps[0], timesteps[0])
        np.testing.assert_array_equal(policy.mask[0], mask[0])


def test_attention_hook_returns_causal_maps_without_changing_outputs():
    algo, ds = trained_dt("continuous")
    batch = algo.make_sampler(ds, seed=2).sample()
    inputs = algo.prepare(batch)
    algo.model.eval()
    with torch.no_grad():
        plain = algo.model(*inputs)
        out, maps = algo.model(*inputs, return_attention=True)
    torch.testing.assert_close(out, plain)
    b, k = batch.mask.shape
    assert (~batch.mask).any(), "the batch should contain padded windows"
    assert len(maps) == algo.config.num_layers
    for w in maps:
        assert w.shape == (b, algo.config.num_heads, 3 * k, 3 * k)
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert (w.triu(diagonal=1) == 0).all()  # no token attends to the future
        key_pad = ~batch.mask.repeat_interleave(3, dim=1)  # (B, 3K)
        off_diag = ~torch.eye(3 * k, dtype=torch.bool)
        assert (w.masked_select(key_pad[:, None, None, :] & off_diag) == 0).all()


def _dataset(returns: list[float], lengths: list[int], env_id: str | None = None,
             name: str = "synthetic", discount: float = 1.0) -> EpisodeDataset:
    from offrl.types import Episode

    rng = np.random.default_rng(0)
    eps = []
    for ret, t in zip(returns, lengths, strict=True):
        rew = np.full(t, ret / t, np.float32)
        eps.append(Episode(rng.normal(size=(t + 1, 3)).astype(np.float32),
                           rng.uniform(-1, 1, (t, 2)).astype(np.float32), rew, False, True))
    ds = EpisodeDataset.from_episodes(eps, discount=discount)
    ds.meta.env_id, ds.meta.name = env_id, name
    return ds


def near(scale: float, target: float, max_t: int):
    return pytest.approx({"return_scale": scale, "target_return": target, "max_timestep": max_t},
                         rel=1e-6)


def test_resolved_defaults_follow_config_then_env_table_then_data():
    cfg = DTConfig(context=2, embed_dim=8, num_layers=1)
    # The facts table: CartPole's return scale 100, target 500, 500 steps.
    r = DT.resolve(cfg, _dataset([20.0, 80.0], [5, 9], name="cartpole-mine"))
    assert r == near(100.0, 500.0, 500)
    # A MuJoCo env missing from the table: scale 1000; target and steps from data / registry.
    r = DT.resolve(cfg, _dataset([20.0, 80.0], [5, 9], env_id="Ant-v5"))
    assert r == near(1000.0, 80.0, 1000)
    # Nothing known: the largest |return| and the longest episode.
    r = DT.resolve(cfg, _dataset([-300.0, 80.0], [5, 9]))
    assert r == near(300.0, 80.0, 9)
    # Explicit config values win.
    explicit = DTConfig(context=2, return_scale=7.0, target_return=3.0, max_timestep=50)
    r = DT.resolve(explicit, _dataset([20.0, 80.0], [5, 9], name="cartpole-mine"))
    assert r == near(7.0, 3.0, 50)
    with pytest.raises(ValueError, match="max_timestep"):
        DT.resolve(DTConfig(max_timestep=4), _dataset([1.0], [9]))
    with pytest.raises(ValueError, match="discount"):
        DT.resolve(cfg, _dataset([1.0], [9], discount=0.99))


def test_sampler_uses_the_resolved_return_scale():
    ds = _dataset([20.0, 80.0], [5, 9], name="cartpole-mine")
    algo = DT.from_dataset(DTConfig(context=3, embed_dim=8, num_layers=1, batch_size=4), ds)
    batch = algo.make_sampler(ds, seed=0).gather(torch.tensor([5]))  # first step, episode 1
    assert batch.returns_to_go[0, -1].item() == pytest.approx(80.0 / 100.0)


@pytest.mark.parametrize("kv_cache", [False, True])
def test_bf16_acting_is_opt_in_close_to_fp32_and_follows_updates(kv_cache: bool) -> None:
    from offrl.algorithms.dt import DTPolicy

    algo, ds = trained_dt("continuous")
    n = 3
    assert algo.make_policy(n).precision == "fp32"  # the default
    fp32 = DTPolicy(algo, n, kv_cache=kv_cache)
    bf16 = DTPolicy(algo, n, kv_cache=kv_cache, precision="bf16")
    rng = np.random.default_rng(0)
    reward = np.zeros(n, np.float32)
    diffs = []
    for _ in range(12):
        obs = rng.normal(size=(n, 3)).astype(np.float32)
        a32, a16 = fp32.act(obs, reward), bf16.act(obs, reward)
        assert a16.dtype == np.float32 and bf16.states.dtype == torch.float32
        bf16.actions[:, -1] = fp32.actions[:, -1]  # both continue from the same window
        diffs.append((algo.actions.to_unit(torch.as_tensor(a16))
                      - algo.actions.to_unit(torch.as_tensor(a32))).abs().max().item())
        reward = rng.normal(size=n).astype(np.float32)
    assert 0 < max(diffs) < 0.05  # bf16 rounding: visible, small
    # An update after the policy was made: the bf16 copy follows the new weights.
    algo.update(algo.make_sampler(ds, seed=1).sample())
    bf16.act(rng.normal(size=(n, 3)).astype(np.float32), reward)
    for name, p in algo.model.state_dict().items():
        if p.is_floating_point():
            torch.testing.assert_close(bf16._bf16_model.state_dict()[name], p.bfloat16())
    if kv_cache:
        assert bf16.cache.model is bf16._bf16_model and bf16.cache.kv.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        DTPolicy(algo, n, precision="fp16")


def test_timestep_init_std_is_opt_in() -> None:
    # None: torch's N(0, 1) (the reference); a value: N(0, value), as d3rlpy / CORL init it.
    ds = tiny_dataset("continuous")

    def std(**overrides) -> float:
        torch.manual_seed(0)
        algo = DT.from_dataset(tiny_config("dt", max_timestep=500, **overrides), ds)
        return float(algo.model.embed_timestep.weight.detach().std())

    assert 0.9 < std() < 1.1
    assert 0.015 < std(timestep_init_std=0.02) < 0.025
    with pytest.raises(ValueError, match="timestep_init_std"):
        DTConfig(timestep_init_std=0.0)
