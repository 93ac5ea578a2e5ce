"""Env construction helpers: the one place that turns an id into a gymnasium env."""

from __future__ import annotations

from functools import lru_cache

import gymnasium as gym


def make_env(env_id: str, reward: str = "dense", **kwargs) -> gym.Env:
    """`gym.make` after registering offrl's own envs (ids under the `offrl/` namespace).
    `reward="delayed"` pays each episode's return on its last step (`DelayedReward`)."""
    import offrl.envs  # noqa: F401  (registers offrl/* ids on import)

    if reward not in ("dense", "delayed"):
        raise ValueError(f"reward must be 'dense' or 'delayed', got {reward!r}")
    env = gym.make(env_id, **kwargs)
    if reward == "delayed":
        from offrl.envs.wrappers import DelayedReward

        env = DelayedReward(env)
    return env


@lru_cache(maxsize=32)
def env_spaces(env_id: str) -> tuple[gym.spaces.Space, gym.spaces.Space]:
    """(observation_space, action_space) of an env id; builds the env once and caches."""
    env = make_env(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
