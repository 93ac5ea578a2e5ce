"""LockstepVectorEnv: the same episodes as gymnasium's SyncVectorEnv (DISABLED autoreset) bit
for bit, on real envs (MuJoCo Hopper, Pendulum, Key-to-Door with its success info)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from offrl.envs import make_env
from offrl.envs.key_to_door import MEMORY_ENV_ID
from offrl.envs.vector import LockstepVectorEnv
from offrl.evaluator import Evaluator


class LinearPolicy:
    """Deterministic obs -> action map (a fixed random linear layer), so an episode depends
    only on its env seed; tanh-bounded Box actions or an argmax over Discrete ones."""

    def __init__(self, env_id: str, num_envs: int) -> None:
        env = make_env(env_id)
        obs_dim = int(np.prod(env.observation_space.shape))
        self.space = env.action_space
        out = self.space.n if isinstance(self.space, gym.spaces.Discrete) else self.space.shape[0]
        self.w = np.random.default_rng(0).normal(size=(obs_dim, out))
        self.num_envs = num_envs
        env.close()

    def reset(self, env_mask: np.ndarray, target_return: float | None = None) -> None:
        assert env_mask.shape == (self.num_envs,)

    def act(self, obs: np.ndarray, last_reward: np.ndarray) -> np.ndarray:
        z = np.asarray(obs, np.float64).reshape(self.num_envs, -1) @ self.w
        if isinstance(self.space, gym.spaces.Discrete):
            return z.argmax(-1)
        return (np.tanh(z) * self.space.high).astype(np.float32)


@pytest.mark.parametrize(("env_id", "kwargs", "episodes", "threads"), [
    ("Hopper-v5", {}, 7, 1),
    ("Hopper-v5", {}, 7, 2),
    ("Pendulum-v1", {"max_episode_steps": 30}, 5, 1),
    (MEMORY_ENV_ID, {}, 7, 3),
])
def test_lockstep_matches_gymnasium_sync(env_id: str, kwargs: dict, episodes: int,
                                         threads: int) -> None:
    results = {}
    for vector in ("sync", "lockstep"):
        extra = {"env_threads": threads} if vector == "lockstep" else {}
        with Evaluator(env_id, 3, vector=vector, env_kwargs=kwargs, **extra) as ev:
            assert ev.vector == vector
            results[vector] = ev.evaluate(LinearPolicy(env_id, 3), episodes, seed=11)[0]
    sync, lock = results["sync"], results["lockstep"]
    np.testing.assert_array_equal(lock.seeds, 11 + np.arange(episodes))
    np.testing.assert_array_equal(lock.seeds, sync.seeds)
    np.testing.assert_array_equal(lock.returns, sync.returns)  # bit for bit, not approx
    np.testing.assert_array_equal(lock.lengths, sync.lengths)
    if env_id == MEMORY_ENV_ID:
        assert lock.successes is not None and sync.successes is not None
        np.testing.assert_array_equal(lock.successes, sync.successes)
    else:
        assert lock.successes is None and sync.successes is None
    if env_id != MEMORY_ENV_ID:  # (Key-to-Door: a linear policy fails every episode alike)
        assert len(set(lock.returns.tolist())) > 1  # the seeds really made other episodes


def test_step_by_step_with_masked_resets() -> None:
    fns = [lambda: make_env("Hopper-v5")] * 3
    ours = LockstepVectorEnv(fns)
    ref = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    o1, _ = ours.reset(seed=[1, 2, None])
    o2, _ = ref.reset(seed=[1, 2, None])
    np.testing.assert_array_equal(o1[:2], o2[:2])  # env 2 unseeded: its own RNG
    o1, _ = ours.reset(seed=[None, None, 3], options={"reset_mask": np.array([False, False, True])})
    o2, _ = ref.reset(seed=[None, None, 3], options={"reset_mask": np.array([False, False, True])})
    np.testing.assert_array_equal(o1, o2)
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = rng.uniform(-1, 1, (3, 3)).astype(np.float32)
        got, want = ours.step(a), ref.step(a)
        for x, y in zip(got[:4], want[:4], strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)
        ended = got[2] | got[3]
        if ended.any():
            seeds = [100 + i if e else None for i, e in enumerate(ended)]
            o1, _ = ours.reset(seed=seeds, options={"reset_mask": ended})
            o2, _ = ref.reset(seed=seeds, options={"reset_mask": ended})
            np.testing.assert_array_equal(o1, o2)
    obs, *_ = ours.step(np.zeros((3, 3), np.float32))
    obs[:] = np.nan  # returned arrays are copies: the env's own buffers are untouched
    assert np.isfinite(ours.step(np.zeros((3, 3), np.float32))[0]).all()
    ours.close()
    ref.close()


def test_bad_input_is_named() -> None:
    env = LockstepVectorEnv([lambda: make_env("Pendulum-v1")] * 2)
    with pytest.raises(ValueError, match="3 actions for 2 envs"):
        env.step(np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.array([1, 0])})
    with pytest.raises(ValueError, match="3 seeds for 2 envs"):
        env.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match="vector must be one of"):
        Evaluator("Pendulum-v1", 2, vector="threads")
    with pytest.raises(ValueError, match="env_threads applies to vector='lockstep'"):
        Evaluator("Pendulum-v1", 2, vector="sync", env_threads=2)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        LockstepVectorEnv([lambda: make_env("Pendulum-v1")], threads=0)
    env.close()
