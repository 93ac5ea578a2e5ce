"""Env wrappers for offrl's experiments."""

from __future__ import annotations

from typing import Any

import gymnasium as gym


class DelayedReward(gym.Wrapper):
    """The DT paper's delayed-return setting (sec. 5.3): reward 0 on every step and the
    episode's whole return on its last one (terminated or truncated, so apply it outside
    the TimeLimit wrapper, as `make_env(..., reward="delayed")` does). Pairs with
    `EpisodeDataset.delayed_rewards()`."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._total = 0.0

    def reset(self, **kwargs: Any):
        self._total = 0.0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._total += float(reward)
        if terminated or truncated:
            out, self._total = self._total, 0.0
            return obs, out, terminated, truncated, info
        return obs, 0.0, terminated, truncated, info
