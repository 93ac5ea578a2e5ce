"""Environments: offrl's own gymnasium envs (registered on import) and the env facts table."""

from offrl.envs.facts import ENV_FACTS, EnvFacts, find_env_facts
from offrl.envs.make import env_spaces, make_env

__all__ = ["ENV_FACTS", "EnvFacts", "env_spaces", "find_env_facts", "make_env"]
