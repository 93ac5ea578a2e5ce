"""Per-episode formats written by other projects.

- Trajectory pickles: a list of dicts per episode with observations (T or T+1 rows), actions,
  rewards and `terminals` or `dones` (the original Decision Transformer repository's format;
  `next_observations` optional). Without terminals/dones an episode counts as truncated.
- stable-baselines expert npz: obs, actions, rewards, episode_starts (flat).
- imitation rollouts npz: obs (T+1 rows per trajectory), acts, terminal, indices.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from offrl.datasets.core import DatasetError, DatasetMeta, EpisodeDataset
from offrl.types import Episode


def _episode_from_dict(d: dict[str, Any], i: int, src: str) -> tuple[Episode, bool]:
    for key in ("observations", "actions", "rewards"):
        if key not in d:
            raise DatasetError(f"{src}: episode {i} is missing key '{key}' (has {sorted(d)})")
    obs, acts = np.asarray(d["observations"]), np.asarray(d["actions"])
    rews = np.asarray(d["rewards"], dtype=np.float32).reshape(-1)
    t = len(acts)
    if t == 0:
        raise DatasetError(f"{src}: episode {i} has zero steps")
    if len(rews) != t:
        raise DatasetError(f"{src}: episode {i}: 'rewards' has {len(rews)} rows, 'actions' {t}")
    done_key = "terminals" if "terminals" in d else "dones" if "dones" in d else None
    terminated = bool(np.asarray(d[done_key]).reshape(-1)[-1]) if done_key else False
    known = True
    if len(obs) == t + 1:
        full = obs
    elif len(obs) == t:
        if "next_observations" in d:
            full = np.concatenate([obs, np.asarray(d["next_observations"])[-1:]])
        else:  # final observation unknown: repeat the last one, never used as s'
            full, known = np.concatenate([obs, obs[-1:]]), terminated
    else:
        raise DatasetError(f"{src}: episode {i}: 'observations' has {len(obs)} rows, expected "
                           f"{t} or {t + 1} for {t} actions")
    if np.issubdtype(acts.dtype, np.floating) is False:
        acts = acts.astype(np.int64).reshape(t)
    return Episode(full.astype(np.float32), acts, rews, terminated, not terminated), known


def load_pickle(path: str | Path, discount: float = 1.0) -> EpisodeDataset:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot unpickle ({exc}); truncated or not a pickle") from exc
    if isinstance(data, dict) and "observations" in data:
        data = [data]
    if not isinstance(data, list | tuple) or not all(isinstance(d, dict) for d in data):
        raise DatasetError(f"{path}: expected a list of per-episode dicts, got {type(data)}")
    if not data:
        raise DatasetError(f"{path}: dataset is empty (no episodes)")
    pairs = [_episode_from_dict(d, i, str(path)) for i, d in enumerate(data)]
    return EpisodeDataset.from_episodes([p[0] for p in pairs],
                                        final_obs_known=np.array([p[1] for p in pairs]),
                                        meta=DatasetMeta(name=path.stem, source=str(path)),
                                        discount=discount)


def _is_object(npz: Any, key: str) -> bool:
    try:
        npz[key]
    except ValueError:
        return True
    return False


def load_npz(
    path: str | Path, discount: float = 1.0, max_episode_steps: int | None = None
) -> EpisodeDataset:
    """Neither npz layout says whether an episode ended by failure or by the time limit
    (imitation's `terminal` is set on both), so an episode of exactly the time limit's
    length counts as truncated and a shorter one as terminated. The limit is
    `max_episode_steps` when given (from the env table), else the longest episode."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            # Object arrays (imitation's per-step `infos`) are skipped: they need pickle,
            # which must not run on an untrusted file, and no field we use lives there.
            z = {k: npz[k] for k in npz.files if not _is_object(npz, k)}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read as npz ({exc}); truncated or corrupt") from exc
    meta = DatasetMeta(name=path.stem, source=str(path))
    if "episode_starts" in z:  # stable-baselines ExpertDataset
        need, obs_key, act_key, rew_key = ("obs", "actions", "rewards"), "obs", "actions", "rewards"
        if not all(k in z for k in need):
            raise DatasetError(f"{path}: missing key(s) {[k for k in need if k not in z]}")
        n = len(z[obs_key])
        first = np.flatnonzero(z["episode_starts"].reshape(-1))
        a_starts = np.unique(np.concatenate([[0], first, [n]]))
        obs_rows = a_starts  # flat: one observation row per step, final obs not stored
        has_final = False
    elif "indices" in z and "acts" in z:  # imitation TrajectoryWithRew, concatenated
        obs_key, act_key, rew_key = "obs", "acts", "rews"
        if rew_key not in z:
            raise DatasetError(f"{path}: missing key 'rews' (trajectories without rewards)")
        n = len(z[act_key])
        a_starts = np.concatenate([[0], z["indices"].astype(np.int64), [n]])
        obs_rows = a_starts + np.arange(len(a_starts))  # T+1 observation rows per trajectory
        has_final = True
        if len(z[obs_key]) != n + len(a_starts) - 1:
            raise DatasetError(f"{path}: 'obs' has {len(z[obs_key])} rows, expected "
                               f"{n + len(a_starts) - 1} (T+1 per trajectory)")
    else:
        raise DatasetError(f"{path}: unknown npz layout with keys {sorted(z)}; expected "
                           f"stable-baselines (obs, actions, rewards, episode_starts) or "
                           f"imitation (obs, acts, rews, terminal, indices)")
    lengths = np.diff(a_starts)
    limit = max_episode_steps or int(lengths.max())
    acts = z[act_key]
    if np.issubdtype(acts.dtype, np.integer):
        acts = acts.reshape(n)
    rews = z[rew_key].reshape(-1).astype(np.float32)
    episodes, known = [], []
    for i in range(len(lengths)):
        s, e = a_starts[i], a_starts[i + 1]
        o = z[obs_key][obs_rows[i] : obs_rows[i] + (e - s) + has_final]
        term = bool(lengths[i] < limit)
        if not has_final:  # repeat the last row as a placeholder, never used as s'
            o = np.concatenate([o, o[-1:]])
        episodes.append(Episode(o.astype(np.float32), acts[s:e], rews[s:e], term, not term))
        known.append(has_final or term)
    return EpisodeDataset.from_episodes(episodes, final_obs_known=np.array(known), meta=meta,
                                        discount=discount)
