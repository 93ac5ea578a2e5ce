"""Key-to-Door: the long-horizon credit-assignment task of the Decision Transformer paper.

Chen et al. 2021, "Decision Transformer", sec. 5.3 (https://arxiv.org/abs/2106.01345), after
Hung et al. 2019, "Optimizing agent behavior over long time scales by transporting value"
(https://arxiv.org/abs/1810.08593). Neither paper published its code or its sizes; the
choices below are ours and are documented so results can be compared.

The episode has three phases, each in its own room (a `room_size` x `room_size` grid):

1. key room (`phase_lengths[0]` = 20 steps): a key lies at a fixed cell; stepping onto it
   picks it up (no reward).
2. distractor room (40 steps): empty; nothing the agent does matters.
3. door room (20 steps): stepping onto the door cell ends the episode with reward 1 if the
   agent holds the key, 0 otherwise.

Phases 1 and 2 always last their full length; when a phase's time runs out the agent is moved
to a uniformly random cell of the next room (never onto the key or the door). Phase 3 ends at
the door or when its time runs out. Rewards are 1 exactly once on success and 0 everywhere
else, so an episode's return is its success indicator and the mean return is the success rate.

Sizes (defaults) and why:
- 7x7 rooms, key at the middle of the top wall (3, 0), door at the middle of the right wall
  (6, 3); actions up/right/down/left, a move into a wall leaves the agent in place.
- A uniform random walk that enters a room at a random cell hits a given mid-wall cell within
  20 steps with probability 0.1754 (exact, by iterating the walk's transition matrix), so the
  random policy succeeds with 0.1754^2 = 3.08% -- the paper's 3.1% -- while an optimal policy
  needs at most 9 steps per room and succeeds always.
- The distractor phase (40 steps) separates the key pickup (steps 1-20) from the door (steps
  61-80) by at least 41 steps: credit must travel over a long, reward-free gap, and every
  phase is at least 20 steps long. The longest episode is 80 steps.
- No no-op action: time advances the phases regardless of what the agent does, so waiting
  buys nothing, and a no-op would only slow the random walk down.

Measured with `collect_episodes(ENV_ID, "random", 20000, seed=0)` (what `offrl collect
keytodoor --episodes 20000` records): 608 / 20,000 successes = 3.04% (95% CI 2.80-3.28%),
consistent with the exact 3.076%; key picked up in 17.9% of episodes (exact 17.54%).

Observations (`obs_mode="vector"`, default): 7 float32 values in [0, 1]:
`[x / (W-1), y / (H-1), phase one-hot (3), has_key, time in phase / phase length]`.
The time fraction makes the observation Markov: the phase boundaries and the end of the
episode are functions of the state. `obs_mode="grid"` gives a (5, H, W) float32 image with
planes agent, key (while it lies in room 1), door (room 3), has_key (a constant plane) and
episode progress (elapsed / max steps, a constant plane; it also fixes the phase).
`observe_key=False` zeroes the has_key feature/plane: the task then needs memory (the
pickup, at least 41 steps before the door, is visible only in the history), a harder variant.
It is registered as `offrl/KeyToDoorMemory-v0` (MEMORY_ENV_ID) so that datasets, run configs
and the evaluator can name it; this is the variant of the original task (Mesnard et al. 2020,
"Counterfactual Credit Assignment in Model-Free RL", https://arxiv.org/abs/2011.09464, and the
DT paper's sec. 5.3), where the agent is not told whether it holds the key. Dynamics, rewards,
seeding and every other observation feature are those of `offrl/KeyToDoor-v0`: the same seed
and actions give the same episode with the has_key feature zeroed. In grid mode the key plane
still shows the key lying in room 1 until it is picked up (what the agent would see), so the
pickup is visible while it happens but not after phase 1.

Termination: the door ends the episode (`terminated=True`). The end of phase 3 is also
reported as `terminated=True`, not as a time-limit truncation: time is part of the
observation, so no reward can follow that state and TD learners must not bootstrap from it
(Pardo et al. 2018, "Time Limits in Reinforcement Learning"). The registered TimeLimit
(`max_episode_steps` = 80) fires on the same step and sets `truncated=True` too; consumers
give `terminated` precedence. `info["success"]` is set on every step (True only on the
successful door step); `info["has_key"]` and `info["phase"]` (0, 1, 2) too.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "offrl/KeyToDoor-v0"
# The memory variant: observe_key=False (has_key always 0 in the observation).
MEMORY_ENV_ID = "offrl/KeyToDoorMemory-v0"
ROOM_SIZE = 7
PHASE_LENGTHS = (20, 40, 20)
MAX_EPISODE_STEPS = sum(PHASE_LENGTHS)
# Exact success probability of the uniform random policy with the defaults (see docstring).
RANDOM_SUCCESS_EXACT = 0.030762
# Measured with 20,000 random-policy episodes (seed 0); the ENV_FACTS reference minimum.
RANDOM_SUCCESS_MEASURED = 0.0304

# (dx, dy) per action; y grows downwards, as in a printed grid.
MOVES = ((0, -1), (1, 0), (0, 1), (-1, 0))
ACTION_NAMES = ("up", "right", "down", "left")


class KeyToDoorEnv(gym.Env[np.ndarray, np.int64]):
    """Three rooms: pick up the key, wait out the distractor, reach the door (module docstring)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        room_size: int = ROOM_SIZE,
        phase_lengths: tuple[int, int, int] = PHASE_LENGTHS,
        key_pos: tuple[int, int] | None = None,
        door_pos: tuple[int, int] | None = None,
        obs_mode: str = "vector",
        observe_key: bool = True,
        render_mode: str | None = None,
    ) -> None:
        if room_size < 2:
            raise ValueError(f"room_size must be >= 2, got {room_size}")
        lengths = tuple(int(n) for n in phase_lengths)
        if len(lengths) != 3 or min(lengths) < 1:
            raise ValueError(f"phase_lengths must be three positive ints, got {phase_lengths}")
        if obs_mode not in ("vector", "grid"):
            raise ValueError(f"obs_mode must be 'vector' or 'grid', got {obs_mode!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        mid = room_size // 2
        self.key_pos = tuple(key_pos) if key_pos is not None else (mid, 0)
        self.door_pos = tuple(door_pos) if door_pos is not None else (room_size - 1, mid)
        for name, (x, y) in (("key_pos", self.key_pos), ("door_pos", self.door_pos)):
            if not (0 <= x < room_size and 0 <= y < room_size):
                raise ValueError(f"{name} {(x, y)} is outside the {room_size}x{room_size} room")
        self.size = room_size
        self.phase_lengths = lengths
        self.max_steps = sum(lengths)
        self.obs_mode = obs_mode
        self.observe_key = observe_key
        self.render_mode = render_mode
        self.action_space = gym.spaces.Discrete(4)
        if obs_mode == "vector":
            self.observation_space = gym.spaces.Box(0.0, 1.0, (7,), np.float32)
        else:
            self.observation_space = gym.spaces.Box(
                0.0, 1.0, (5, room_size, room_size), np.float32)
        self._scale = 1.0 / (room_size - 1)
        # Episode state (set by reset).
        self.x = self.y = 0
        self.phase = 0  # 0 key room, 1 distractor room, 2 door room
        self.t_phase = 0  # steps taken in the current phase
        self.elapsed = 0
        self.has_key = False

    # ---- dynamics ------------------------------------------------------------------------

    def _enter_room(self) -> None:
        # A uniform cell other than the room's object: entering on the key or the door would
        # hand out the pickup or the episode end without a step.
        blocked = self.key_pos if self.phase == 0 else self.door_pos if self.phase == 2 else None
        n = self.size * self.size - (blocked is not None)
        i = int(self.np_random.integers(n))
        if blocked is not None and i >= blocked[1] * self.size + blocked[0]:
            i += 1
        self.x, self.y = i % self.size, i // self.size

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.phase, self.t_phase, self.elapsed, self.has_key = 0, 0, 0, False
        self._enter_room()
        return self._obs(), self._info(False)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = int(action)
        if not 0 <= a < 4:
            raise ValueError(f"action must be in 0..3 (up, right, down, left), got {action!r}")
        if self.phase > 2:
            raise RuntimeError("step() called after the episode ended; call reset()")
        dx, dy = MOVES[a]
        nx, ny = self.x + dx, self.y + dy
        if 0 <= nx < self.size and 0 <= ny < self.size:
            self.x, self.y = nx, ny
        self.t_phase += 1
        self.elapsed += 1
        reward, terminated, success = 0.0, False, False
        if self.phase == 0 and not self.has_key and (self.x, self.y) == self.key_pos:
            self.has_key = True
        elif self.phase == 2 and (self.x, self.y) == self.door_pos:
            success = self.has_key
            reward, terminated = float(success), True
        if not terminated and self.t_phase >= self.phase_lengths[self.phase]:
            if self.phase == 2:
                terminated = True  # out of time in the door room: a true end (docstring)
            else:
                self.phase += 1
                self.t_phase = 0
                self._enter_room()
        obs, info = self._obs(), self._info(success)
        if terminated:
            self.phase = 3  # guards against stepping a finished episode
        return obs, reward, terminated, False, info

    # ---- observations ----------------------------------------------------------------------

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": success, "has_key": self.has_key, "phase": min(self.phase, 2)}

    def _obs(self) -> np.ndarray:
        phase = min(self.phase, 2)
        held = 1.0 if self.has_key and self.observe_key else 0.0
        if self.obs_mode == "vector":
            obs = np.zeros(7, dtype=np.float32)
            obs[0] = self.x * self._scale
            obs[1] = self.y * self._scale
            obs[2 + phase] = 1.0
            obs[5] = held
            obs[6] = self.t_phase / self.phase_lengths[phase]
            return obs
        grid = np.zeros((5, self.size, self.size), dtype=np.float32)
        grid[0, self.y, self.x] = 1.0
        if phase == 0 and not self.has_key:
            grid[1, self.key_pos[1], self.key_pos[0]] = 1.0
        if phase == 2:
            grid[2, self.door_pos[1], self.door_pos[0]] = 1.0
        grid[3] = held
        grid[4] = self.elapsed / self.max_steps
        return grid

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        phase = min(self.phase, 2)
        rows = []
        for y in range(self.size):
            row = []
            for x in range(self.size):
                if (x, y) == (self.x, self.y):
                    row.append("A")
                elif phase == 0 and not self.has_key and (x, y) == self.key_pos:
                    row.append("K")
                elif phase == 2 and (x, y) == self.door_pos:
                    row.append("D")
                else:
                    row.append(".")
            rows.append(" ".join(row))
        room = ("key", "distractor", "door")[phase]
        held = "yes" if self.has_key else "no"
        head = (f"phase {phase + 1} ({room} room) t={self.t_phase}/{self.phase_lengths[phase]} "
                f"key={held}")
        return "\n".join([head, *rows]) + "\n"


def register() -> None:
    """Register `offrl/KeyToDoor-v0` and `offrl/KeyToDoorMemory-v0` (observe_key=False) once
    (importing `offrl.envs` calls this)."""
    for env_id, kwargs in ((ENV_ID, {}), (MEMORY_ENV_ID, {"observe_key": False})):
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="offrl.envs.key_to_door:KeyToDoorEnv",
                max_episode_steps=MAX_EPISODE_STEPS,
                kwargs=kwargs,
            )
