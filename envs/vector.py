"""A light lockstep vector env for evaluation: N gymnasium envs stepped in one Python loop
straight into preallocated arrays, with no autoreset.

Why not gymnasium's `SyncVectorEnv`: per step it merges every env's info dict into the
batched info (`_add_info`, ~15 us per env for MuJoCo's six keys), iterates the batched
action space and copies the stacked observations; at N=10 with a cheap policy that is a
tenth of a lockstep. Here one step is `env.step(actions[i])` per env, its observation written
into row i of a preallocated (N, *obs_shape) array, and only the info keys the caller asks for
(`info_keys`, default `("success",)`, the one the evaluator reads) are gathered.

Semantics are those of `SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)` for
everything the evaluator uses (tested bit for bit): same env objects (the factories are
called in order), same per-env seeds and reset options, same actions, same observation and
reward dtypes; infos hold `key` and the mask `_key` for each requested key some env reported.
Like DISABLED mode, an env that ended must be reset (`reset(options={"reset_mask": ...})`)
before it is stepped again; stepping it anyway is left to the env (gymnasium's TimeLimit and
OrderEnforcing wrappers do not check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import numpy as np


class LockstepVectorEnv:
    """N envs in lockstep. `reset`/`step` return fresh arrays (copies of the preallocated
    ones: a few microseconds, and a policy may keep what it was given)."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]],
                 info_keys: Sequence[str] = ("success",), threads: int = 1) -> None:
        """`threads` > 1 steps contiguous groups of envs in that many threads (the caller's
        and a pool's). It pays only where the env step releases the GIL for most of its time
        (MuJoCo's `mj_step` does, ~60% of a Hopper step) and a core is free while the policy
        waits for observations; every env still runs the same calls, so episodes are
        unchanged."""
        if not env_fns:
            raise ValueError("LockstepVectorEnv needs at least one env factory")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        space = self.single_observation_space
        if not isinstance(space, gym.spaces.Box | gym.spaces.Discrete):
            raise TypeError(f"LockstepVectorEnv supports Box and Discrete observations, "
                            f"got {space}")
        n = self.num_envs
        self.info_keys = tuple(info_keys)
        self._obs = np.zeros((n, *space.shape), dtype=space.dtype)  # (N, *obs_shape)
        self._rewards = np.zeros(n, dtype=np.float64)  # (N,)
        self._terminated = np.zeros(n, dtype=bool)
        self._truncated = np.zeros(n, dtype=bool)
        self.threads = min(threads, n)
        self._groups = [g.tolist() for g in np.array_split(np.arange(n), self.threads)]
        self._pool = ThreadPoolExecutor(self.threads - 1) if self.threads > 1 else None
        self.closed = False

    def _infos(self, rows: Sequence[int], infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.info_keys:
            present = [(e, info[key]) for e, info in zip(rows, infos, strict=True) if key in info]
            if not present:
                continue
            values = np.zeros(self.num_envs, dtype=np.asarray(present[0][1]).dtype)
            mask = np.zeros(self.num_envs, dtype=bool)
            for e, v in present:
                values[e], mask[e] = v, True
            out[key], out[f"_{key}"] = values, mask
        return out

    def reset(self, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the envs in `options["reset_mask"]` (default: all). `seed`: one per env
        (None = no reseed), or an int s meaning s + i for env i, as in gymnasium."""
        n = self.num_envs
        if seed is None or isinstance(seed, int | np.integer):
            seeds = [None if seed is None else int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"reset: {len(seeds)} seeds for {n} envs")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            rows = list(range(n))
        else:
            mask = np.asarray(mask)
            if mask.shape != (n,) or mask.dtype != np.bool_:
                raise ValueError(f"reset: reset_mask must be a ({n},) bool array, got shape "
                                 f"{mask.shape} dtype {mask.dtype}")
            rows = np.flatnonzero(mask).tolist()
        infos = []
        for e in rows:
            obs, info = self.envs[e].reset(seed=seeds[e], options=options or None)
            self._obs[e] = obs
            infos.append(info)
        return self._obs.copy(), self._infos(rows, infos)

    def step(self, actions: np.ndarray) -> tuple[
            np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """actions (N, *action_shape) -> obs (N, ...), rewards (N,) float64, terminated (N,),
        truncated (N,), infos."""
        if len(actions) != self.num_envs:
            raise ValueError(f"step: {len(actions)} actions for {self.num_envs} envs")
        infos: list[dict[str, Any]] = [{}] * self.num_envs
        if self._pool is None:
            self._step_rows(range(self.num_envs), actions, infos)
        else:  # each group writes its own rows
            futures = [self._pool.submit(self._step_rows, g, actions, infos)
                       for g in self._groups[1:]]
            self._step_rows(self._groups[0], actions, infos)
            for f in futures:
                f.result()
        info_out = self._infos(range(self.num_envs), infos) if self.info_keys else {}
        return (self._obs.copy(), self._rewards.copy(), self._terminated.copy(),
                self._truncated.copy(), info_out)

    def _step_rows(self, rows: Sequence[int], actions: np.ndarray,
                   infos: list[dict[str, Any]]) -> None:
        obs, rew, term, trunc = self._obs, self._rewards, self._terminated, self._truncated
        for e in rows:
            obs[e], rew[e], term[e], trunc[e], infos[e] = self.envs[e].step(actions[e])

    def close(self) -> None:
        if not self.closed:
            if self._pool is not None:
                self._pool.shutdown()
            for env in self.envs:
                env.close()
            self.closed = True
