"""Test-only helpers for the algorithm tests: a hand-coded CartPole expert, a 1-D point-mass
task with mixed-quality data, episode collection and a small vectorized rollout loop that
drives any `offrl.algorithm.Policy` the way the evaluator does."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from offrl.datasets import EpisodeDataset
from offrl.types import Episode

# Linear state feedback on (x, x_dot, theta, theta_dot): push towards where the pole falls,
# corrected for cart position and velocity so the cart does not drift off the track.
# Verified by `test_cartpole_expert_scores_500` (500 on every seed, also with 10% random
# actions).
CARTPOLE_GAINS = np.array([0.5, 1.0, 10.0, 2.0])


def cartpole_expert(obs: np.ndarray) -> np.ndarray:
    """(N, 4) CartPole observations -> (N,) int64 actions (1 = push right)."""
    return (np.asarray(obs) @ CARTPOLE_GAINS > 0).astype(np.int64)


class PointMass(gym.Env):
    """x in [-2, 2] starts uniform in [-1, 1]; an action moves it by up to `STEP`; the reward
    is -|x'| (stay at the origin); 20 steps, then a time-out (never a termination).
    Box(-1, 1, (1,)) actions, or Discrete(3) = move left / stay / move right."""

    STEP = 0.2
    HORIZON = 20

    def __init__(self, discrete: bool = False) -> None:
        self.discrete = discrete
        self.observation_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.action_space = (gym.spaces.Discrete(3) if discrete
                             else gym.spaces.Box(-1.0, 1.0, (1,), np.float32))
        self._x, self._t = 0.0, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._x, self._t = float(self.np_random.uniform(-1, 1)), 0
        return np.array([self._x], np.float32), {}

    def step(self, action):
        move = (int(action) - 1) if self.discrete else float(np.clip(np.ravel(action)[0], -1, 1))
        self._x = float(np.clip(self._x + self.STEP * move, -2.0, 2.0))
        self._t += 1
        return (np.array([self._x], np.float32), -abs(self._x), False,
                self._t >= self.HORIZON, {})


def point_mass_behavior(rng: np.random.Generator, discrete: bool, p_good: float
                        ) -> Callable[[np.ndarray], np.ndarray | int]:
    """Each step: with probability p_good the expert (move towards 0), else a harmful policy
    (full push away from 0)."""

    def act(obs: np.ndarray) -> np.ndarray | int:
        x = float(obs[0])
        good = rng.random() < p_good
        direction = -np.sign(x) if good else (np.sign(x) or 1.0)
        if discrete:
            return int(direction) + 1
        size = min(abs(x) / PointMass.STEP, 1.0) if good else 1.0
        return np.array([direction * size], np.float32)

    return act


def collect(env: gym.Env, controller: Callable[[np.ndarray], object], num_episodes: int,
            seed: int) -> list[Episode]:
    """Run `controller(obs) -> action` for `num_episodes` episodes (env seeds seed, seed+1..)."""
    episodes = []
    for i in range(num_episodes):
        obs, _ = env.reset(seed=seed + i)
        observations, actions, rewards = [obs], [], []
        while True:
            a = controller(obs)
            obs, r, term, trunc, _ = env.step(a)
            observations.append(obs)
            actions.append(a)
            rewards.append(r)
            if term or trunc:
                break
        episodes.append(Episode(np.asarray(observations, np.float32), np.asarray(actions),
                                np.asarray(rewards, np.float32), bool(term),
                                bool(trunc and not term)))
    return episodes


def cartpole_dataset(num_episodes: int, epsilon: float, seed: int) -> EpisodeDataset:
    """Expert CartPole episodes; each action is random with probability `epsilon`."""
    rng = np.random.default_rng(seed)
    env = gym.make("CartPole-v1")

    def controller(obs: np.ndarray) -> int:
        if rng.random() < epsilon:
            return int(rng.integers(2))
        return int(cartpole_expert(obs[None])[0])

    eps = collect(env, controller, num_episodes, seed)
    env.close()
    ds = EpisodeDataset.from_episodes(eps, observation_space=env.observation_space,
                                      action_space=env.action_space)
    ds.meta.env_id, ds.meta.name = "CartPole-v1", "cartpole-expert-test"
    return ds


def cartpole_failing_dataset(num_episodes: int, seed: int) -> EpisodeDataset:
    """CartPole episodes of graded quality: the expert (10% random actions) until a random
    step in [30, 600), then always pushing right until the pole falls; returns spread from
    ~70 to 500, so a return-conditioned policy can be asked for any of them."""
    rng = np.random.default_rng(seed)
    env = gym.make("CartPole-v1")
    episodes: list[Episode] = []
    for i in range(num_episodes):
        fail_at, t = int(rng.integers(30, 600)), [0]

        def controller(obs: np.ndarray, fail_at: int = fail_at, t: list[int] = t) -> int:
            t[0] += 1
            if t[0] > fail_at:
                return 1
            if rng.random() < 0.1:
                return int(rng.integers(2))
            return int(cartpole_expert(obs[None])[0])

        episodes += collect(env, controller, 1, seed + i)
    env.close()
    ds = EpisodeDataset.from_episodes(episodes, observation_space=env.observation_space,
                                      action_space=env.action_space)
    ds.meta.env_id, ds.meta.name = "CartPole-v1", "cartpole-graded-test"
    return ds


def rollout(policy, make_env: Callable[[], gym.Env], num_envs: int, num_episodes: int,
            seed: int, target_return: float | None = None) -> np.ndarray:
    """The returns of `num_episodes` episodes of `policy` on `num_envs` envs in lockstep.

    Exactly `num_episodes` episodes in all, assigned round-robin to envs up front so the
    result does not favour short episodes; finished envs keep receiving their last
    observation (their actions are ignored) until every quota is met.
    """
    envs = [make_env() for _ in range(num_envs)]
    quota = np.bincount(np.arange(num_episodes) % num_envs, minlength=num_envs)
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    active = quota > 0
    policy.reset(np.ones(num_envs, dtype=bool), target_return)
    last_r = np.zeros(num_envs)
    running = np.zeros(num_envs)
    returns: list[float] = []
    started = num_envs
    while active.any():
        actions = policy.act(obs, last_r)
        done = np.zeros(num_envs, dtype=bool)
        for i in np.flatnonzero(active):
            o, r, term, trunc, _ = envs[i].step(actions[i])
            obs[i], last_r[i] = o, r
            running[i] += r
            if term or trunc:
                returns.append(running[i])
                running[i], quota[i] = 0.0, quota[i] - 1
                if quota[i] > 0:
                    obs[i] = envs[i].reset(seed=seed + started)[0]
                    started += 1
                    done[i] = True
                else:
                    active[i] = False
        if done.any():
            policy.reset(done, target_return)
    for env in envs:
        env.close()
    return np.asarray(returns)


# ---- tiny fixtures for the contract tests ------------------------------------------------

TINY_BOX = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
TINY_DISCRETE = gym.spaces.Discrete(3)
TINY_OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)


def tiny_dataset(kind: str, seed: int = 0) -> EpisodeDataset:
    """Six short random episodes (lengths 3..12, mixed endings) with obs (3,) offset from zero
    mean and either asymmetric Box(2,) actions or Discrete(3) actions."""
    rng = np.random.default_rng(seed)
    space = TINY_BOX if kind == "continuous" else TINY_DISCRETE
    episodes = []
    for i, t in enumerate([7, 12, 3, 10, 5, 9]):
        obs = rng.normal(loc=[1.0, -2.0, 0.5], scale=[1.0, 3.0, 0.2], size=(t + 1, 3))
        if kind == "continuous":
            acts = rng.uniform(space.low, space.high, size=(t, 2)).astype(np.float32)
        else:
            acts = rng.integers(0, space.n, size=t)
        term = i % 2 == 0
        episodes.append(Episode(obs.astype(np.float32), acts,
                                rng.normal(size=t).astype(np.float32), term, not term))
    return EpisodeDataset.from_episodes(episodes, observation_space=TINY_OBS, action_space=space)


def tiny_config(name: str, **overrides):
    """Small networks and batches for fast contract tests (paper defaults otherwise)."""
    from offrl.algorithms import ALGORITHMS

    base = {
        "dt": dict(batch_size=8, context=4, embed_dim=16, num_layers=2, num_heads=2,
                   warmup_steps=5, learning_rate=1e-3),
        "cql": dict(batch_size=16, actor_hidden=(16, 16), critic_hidden=(16, 16),
                    num_sampled_actions=3),
        "bc": dict(batch_size=16, hidden=(16, 16), learning_rate=1e-3),
        "pbc": dict(batch_size=16, hidden=(16, 16), learning_rate=1e-3, top_fraction=0.5),
    }[name]
    return ALGORITHMS[name].Config(**{**base, **overrides})


class ControllerPolicy:
    """Wraps a per-batch controller (N, *obs) -> (N,) actions as a stateless `Policy`."""

    def __init__(self, controller: Callable[[np.ndarray], np.ndarray]) -> None:
        self.controller = controller

    def reset(self, env_mask: np.ndarray, target_return: float | None = None) -> None:
        pass

    def act(self, obs: np.ndarray, last_reward: np.ndarray) -> np.ndarray:
        return self.controller(obs)
