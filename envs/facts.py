"""The one table of per-environment facts read by loaders, the evaluator and `datasets info`.

Reference scores are D4RL's (random and expert policy returns, used for the normalized
score 100 * (R - min) / (max - min)); target returns and return scales are the Decision
Transformer paper's.

D4RL v2 MuJoCo data was recorded on gym's v3 envs (mujoco-py). The Gymnasium v5 envs keep
their observation layout (positions without the root x, then velocities, clipped to +-10
for hopper and walker2d), action bounds, frame skips and model files, with one exception:
Walker2d-v5's model gives the right foot the left foot's friction (1.9; v3/v4 had 0.9, an
asymmetry Gymnasium fixed). Data recorded with the old model is therefore evaluated on
`offrl/Walker2dD4RL-v5` (Walker2d-v5 with v4's walker2d.xml), which `d4rl_env_id` names and
the D4RL loader picks. tests/test_env_layout.py checks all of this against the simulator
state. MuJoCo itself changed (2.x -> the installed version), so contact details still differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from offrl.envs.d4rl_compat import WALKER2D_D4RL_ID
from offrl.envs.key_to_door import ENV_ID as KEY_TO_DOOR_ID
from offrl.envs.key_to_door import MAX_EPISODE_STEPS as KEY_TO_DOOR_STEPS
from offrl.envs.key_to_door import MEMORY_ENV_ID as KEY_TO_DOOR_MEMORY_ID
from offrl.envs.key_to_door import RANDOM_SUCCESS_MEASURED


@dataclass(frozen=True)
class EnvFacts:
    key: str  # short name used in dataset names: "hopper" in "hopper-medium-v2"
    env_id: str  # gymnasium id used for evaluation
    max_episode_steps: int
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    target_returns: tuple[float, ...] = ()  # default return-to-go targets for DT
    return_scale: float = 1.0  # returns-to-go are divided by this inside the DT policy
    d4rl_env_id: str | None = None  # env matching D4RL v2 data's dynamics, when not env_id

    @property
    def d4rl_eval_env_id(self) -> str:
        return self.d4rl_env_id or self.env_id


ENV_FACTS: dict[str, EnvFacts] = {
    f.key: f
    for f in (
        EnvFacts("hopper", "Hopper-v5", 1000, -20.272305, 3234.3, (3600.0, 1800.0), 1000.0),
        EnvFacts("halfcheetah", "HalfCheetah-v5", 1000, -280.178953, 12135.0,
                 (12000.0, 6000.0), 1000.0),
        EnvFacts("walker2d", "Walker2d-v5", 1000, 1.629008, 4592.3, (5000.0, 2500.0), 1000.0,
                 d4rl_env_id=WALKER2D_D4RL_ID),
        # Classic control: no D4RL reference; random ~22 on CartPole, the cap is 500.
        EnvFacts("cartpole", "CartPole-v1", 500, None, None, (500.0,), 100.0),
        EnvFacts("pendulum", "Pendulum-v1", 200, None, None, (-150.0,), 100.0),
        # Return = success indicator: ref_min is the random policy's measured success rate,
        # so the normalized score is D4RL-style; the paper's number is the raw mean return.
        EnvFacts("keytodoor", KEY_TO_DOOR_ID, KEY_TO_DOOR_STEPS, RANDOM_SUCCESS_MEASURED, 1.0,
                 (1.0,), 1.0),
        # The memory variant (has_key hidden): same dynamics, so the same random success
        # rate, time limit and targets. Its dataset names carry "memory" as well as
        # "keytodoor" ("keytodoor/random-memory-1k-v0"); find_env_facts tries it first.
        EnvFacts("keytodoor-memory", KEY_TO_DOOR_MEMORY_ID, KEY_TO_DOOR_STEPS,
                 RANDOM_SUCCESS_MEASURED, 1.0, (1.0,), 1.0),
    )
}


def _normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_env_facts(name: str | None) -> EnvFacts | None:
    """Facts for a gymnasium id ("Hopper-v5"), a table key or a D4RL/Minari dataset name
    ("hopper-medium-v2", "mujoco/hopper/medium-v0"); None when nothing matches."""
    if not name:
        return None
    for facts in ENV_FACTS.values():
        if name in (facts.env_id, facts.key, facts.d4rl_env_id):
            return facts
    base = name.split("/")
    parts = [p for p in re.split(r"[-/_]", name.lower()) if p]
    # A key of several words ("keytodoor-memory") matches a name holding all of them, and
    # more specific keys go first: "keytodoor/random-memory-1k-v0" is the memory variant.
    for facts in sorted(ENV_FACTS.values(), key=lambda f: -len(f.key.split("-"))):
        env_base = _normalize(facts.env_id.split("-v")[0])
        if (_normalize(base[0].split("-v")[0]) == env_base
                or all(word in parts for word in facts.key.split("-"))):
            return facts
    return None
