"""Test-only builders for dataset fixtures and naive reference implementations."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from offrl.types import Episode


def random_episodes(
    rng: np.random.Generator, lengths: list[int], terminated: list[bool], obs_dim: int = 3,
    act_dim: int | None = 2, n_actions: int = 4,
) -> list[Episode]:
    """Episodes with random float observations; Box actions (act_dim) or Discrete (None)."""
    eps = []
    for t, term in zip(lengths, terminated, strict=True):
        acts = (rng.uniform(-1, 1, (t, act_dim)).astype(np.float32) if act_dim
                else rng.integers(0, n_actions, t))
        eps.append(Episode(rng.normal(size=(t + 1, obs_dim)).astype(np.float32), acts,
                           rng.normal(size=t).astype(np.float32), term, not term))
    return eps


def flat_d4rl(episodes: list[Episode], with_timeouts: bool = True, with_next: bool = True,
              ) -> dict[str, np.ndarray]:
    """The D4RL flat layout of episodes: one row per step, ends marked by terminals/timeouts."""
    obs, nxt, acts, rews, terms, touts = [], [], [], [], [], []
    for ep in episodes:
        t = ep.length
        obs.append(ep.observations[:-1])
        nxt.append(ep.observations[1:])
        acts.append(ep.actions)
        rews.append(ep.rewards)
        term = np.zeros(t, bool)
        tout = np.zeros(t, bool)
        (term if ep.terminated else tout)[-1] = True
        terms.append(term)
        touts.append(tout)
    out = {"observations": np.concatenate(obs), "actions": np.concatenate(acts),
           "rewards": np.concatenate(rews), "terminals": np.concatenate(terms)}
    if with_timeouts:
        out["timeouts"] = np.concatenate(touts)
    if with_next:
        out["next_observations"] = np.concatenate(nxt)
    return out


def write_hdf5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def naive_rtg(rewards: np.ndarray, discount: float) -> np.ndarray:
    out, acc = np.zeros(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + discount * acc
        out[t] = acc
    return out


def naive_split(terminals: np.ndarray, timeouts: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, end_exclusive, terminated) per episode, one step at a time."""
    episodes, start = [], 0
    for i in range(len(terminals)):
        if terminals[i] or timeouts[i] or i == len(terminals) - 1:
            episodes.append((start, i + 1, bool(terminals[i])))
            start = i + 1
    return episodes
