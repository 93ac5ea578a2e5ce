"""Env construction helpers: the one place that turns an id into a gymnasium env."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

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


def env_spaces(
    env_id: str, env_kwargs: Mapping[str, Any] | None = None,
) -> tuple[gym.spaces.Space, gym.spaces.Space]:
    """(observation_space, action_space) of `make_env(env_id, **env_kwargs)`; builds the env
    once per (id, kwargs) and caches."""
    # JSON text as the cache key: kwargs (from a Minari spec) may hold unhashable lists.
    return _env_spaces(env_id, json.dumps(dict(env_kwargs or {}), sort_keys=True))


@lru_cache(maxsize=32)
def _env_spaces(env_id: str, kwargs_json: str) -> tuple[gym.spaces.Space, gym.spaces.Space]:
    env = make_env(env_id, **json.loads(kwargs_json))
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
