"""Gymnasium ids whose dynamics match the data D4RL v2 recorded on gym's v3 MuJoCo envs,
where the v5 env differs (see envs/facts.py)."""

from __future__ import annotations

import gymnasium as gym

WALKER2D_D4RL_ID = "offrl/Walker2dD4RL-v5"


def register() -> None:
    """Register `offrl/Walker2dD4RL-v5`: Walker2d-v5 on v4's walker2d.xml (right foot
    friction 0.9, as in v3, which D4RL used), same time limit."""
    if WALKER2D_D4RL_ID not in gym.registry:
        gym.register(
            id=WALKER2D_D4RL_ID,
            entry_point="gymnasium.envs.mujoco.walker2d_v5:Walker2dEnv",
            max_episode_steps=1000,
            kwargs={"xml_file": "walker2d.xml"},
        )
