"""The delayed-return setting: the dataset transform against a naive loop, and the env
wrapper paying the whole return on the last step (terminated and truncated episodes)."""

from __future__ import annotations

import numpy as np

from offrl.envs import make_env
from tests.algo_helpers import tiny_dataset


def test_dataset_moves_every_reward_to_the_last_step() -> None:
    ds = tiny_dataset("continuous")
    delayed = ds.delayed_rewards()
    for i in range(ds.num_episodes):
        ep, d = ds.episode(i), delayed.episode(i)
        want = np.zeros_like(ep.rewards)
        want[-1] = ep.rewards.sum(dtype=np.float64)
        np.testing.assert_allclose(d.rewards, want, rtol=1e-6)
        np.testing.assert_array_equal(d.observations, ep.observations)
        np.testing.assert_array_equal(d.actions, ep.actions)
        # Returns-to-go: the whole return at every step.
        s, e = ds.episode_starts[i], ds.episode_starts[i + 1]
        np.testing.assert_allclose(delayed.returns_to_go[s:e], ep.rewards.sum(), rtol=1e-5)
    np.testing.assert_allclose(delayed.episode_returns, ds.episode_returns, rtol=1e-6)
    np.testing.assert_array_equal(delayed.terminated, ds.terminated)
    assert delayed.meta.extra["reward"] == "delayed" and ds.meta.extra.get("reward") is None


def _run(env, actions) -> tuple[list[float], bool, bool]:
    env.reset(seed=0)
    rewards = []
    for a in actions:
        _, r, term, trunc, _ = env.step(a)
        rewards.append(r)
        if term or trunc:
            return rewards, term, trunc
    return rewards, False, False


def test_wrapper_pays_the_return_at_the_end() -> None:
    rng = np.random.default_rng(0)
    acts = [int(a) for a in rng.integers(0, 2, 600)]
    dense, term, trunc = _run(make_env("CartPole-v1"), acts)
    delayed, term2, trunc2 = _run(make_env("CartPole-v1", reward="delayed"), acts)
    assert (term, trunc) == (term2, trunc2) and term
    assert delayed[:-1] == [0.0] * (len(dense) - 1) and delayed[-1] == sum(dense)
    # Truncation by the time limit also pays out, and the next episode starts from zero.
    env = make_env("Pendulum-v1", reward="delayed", max_episode_steps=5)
    for _ in range(2):
        rewards, term, trunc = _run(env, [np.zeros(1, np.float32)] * 10)
        assert trunc and len(rewards) == 5 and rewards[:4] == [0.0] * 4 and rewards[4] < 0
    zeros = [np.zeros(1, np.float32)] * 10
    dense_p, _, _ = _run(make_env("Pendulum-v1", max_episode_steps=5), zeros)
    assert rewards[4] == sum(dense_p)
