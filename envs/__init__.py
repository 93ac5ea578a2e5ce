"""Environments: offrl's own gymnasium envs (registered on import) and the env facts table."""

from offrl.envs import d4rl_compat
from offrl.envs.facts import ENV_FACTS, EnvFacts, find_env_facts
from offrl.envs.key_to_door import KeyToDoorEnv, register
from offrl.envs.make import env_spaces, make_env
from offrl.envs.wrappers import DelayedReward

register()  # offrl/KeyToDoor-v0, offrl/KeyToDoorMemory-v0
d4rl_compat.register()  # offrl/Walker2dD4RL-v5

__all__ = ["ENV_FACTS", "DelayedReward", "EnvFacts", "KeyToDoorEnv", "env_spaces",
           "find_env_facts", "make_env"]
