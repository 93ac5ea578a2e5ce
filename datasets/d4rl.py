"""D4RL-format HDF5 files, read natively (the `d4rl` package pins gym<0.25 and mujoco-py).

Keys: observations (N, obs), actions (N, act), rewards (N,), terminals (N,), and optionally
timeouts (N,) and next_observations (N, obs). Episodes end at a terminal or a time-out;
without `timeouts` they are cut every `max_episode_steps` steps (from the env table).
The last episode of a file ends where the data does and counts as truncated.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np

from offrl.datasets.core import DatasetError, DatasetMeta, EpisodeDataset
from offrl.envs.facts import find_env_facts

_BASE_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2"
_LEVELS = ("random", "medium", "expert", "medium-replay", "full-replay", "medium-expert")
# The published gym-MuJoCo v2 table: name -> URL (the file name swaps the level's '-' for '_').
D4RL_URLS: dict[str, str] = {
    f"{env}-{level}-v2": f"{_BASE_URL}/{env}_{level.replace('-', '_')}-v2.hdf5"
    for env in ("hopper", "halfcheetah", "walker2d", "ant")
    for level in _LEVELS
}

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")


def d4rl_cache_dir() -> Path:
    return Path(os.environ.get("D4RL_DATASET_DIR", Path.home() / ".d4rl" / "datasets"))


def d4rl_path(name: str) -> Path:
    if name not in D4RL_URLS:
        known = ", ".join(sorted(D4RL_URLS)[:6])
        raise DatasetError(f"unknown D4RL dataset '{name}'; known names include {known}, ... "
                           f"(`offrl datasets list` prints all)")
    return d4rl_cache_dir() / D4RL_URLS[name].rsplit("/", 1)[1]


def download_d4rl(name: str, timeout: float = 60.0) -> Path:
    """Fetch a published D4RL file into the cache (temporary file, then rename)."""
    path = d4rl_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    url = D4RL_URLS[name]
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"could not download D4RL dataset '{name}' from {url}: {exc}. Without network, "
            f"copy the file to {path} (or set D4RL_DATASET_DIR), or generate a comparable "
            f"dataset with `offrl collect`"
        ) from exc
    os.replace(tmp, path)
    return path


def load_d4rl(
    source: str | Path, *, download: bool = True, env_id: str | None = None,
    max_episode_steps: int | None = None, discount: float = 1.0,
) -> EpisodeDataset:
    """Load `d4rl:<name>` (cache, then download) or a D4RL-layout HDF5 file path."""
    name = None
    if isinstance(source, str) and source.startswith("d4rl:"):
        name = source[len("d4rl:"):]
        path = d4rl_path(name)
        if not path.exists():
            if not download:
                raise DatasetError(f"D4RL dataset '{name}' is not in the cache ({path}) and "
                                   f"download is off")
            path = download_d4rl(name)
    else:
        path = Path(source)
        if not path.exists():
            raise DatasetError(f"{path}: file not found")
    arrays = read_hdf5(path)
    facts = find_env_facts(env_id or name or path.stem)
    if max_episode_steps is None and facts is not None:
        max_episode_steps = facts.max_episode_steps
    if env_id is None and facts is not None:
        # A published D4RL v2 file (by name) was recorded on gym v3 dynamics; any other
        # D4RL-layout file (e.g. offrl's own replay buffers) on the current env.
        released = (name or path.stem.replace("_", "-")) in D4RL_URLS
        env_id = facts.d4rl_eval_env_id if released else facts.env_id
    meta = DatasetMeta(
        name=name or path.stem, source=str(path), env_id=env_id,
        ref_min_score=facts.ref_min_score if facts else None,
        ref_max_score=facts.ref_max_score if facts else None,
    )
    return from_flat(arrays, meta, max_episode_steps, discount)


def read_hdf5(path: Path) -> dict[str, np.ndarray]:
    try:
        f = h5py.File(path, "r")
    except OSError as exc:  # truncated or not HDF5 at all
        raise DatasetError(f"{path}: cannot read as HDF5 ({exc}); the file may be truncated or "
                           f"corrupt: delete it and fetch it again") from exc
    out: dict[str, np.ndarray] = {}
    with f:
        for key in REQUIRED_KEYS:
            if key not in f:
                raise DatasetError(f"{path}: missing key '{key}'; a D4RL file needs "
                                   f"{', '.join(REQUIRED_KEYS)} (timeouts, next_observations "
                                   f"optional); found {sorted(f.keys())}")
        for key in (*REQUIRED_KEYS, "timeouts", "next_observations"):
            if key in f:
                try:
                    out[key] = f[key][()]
                except (OSError, KeyError) as exc:
                    raise DatasetError(f"{path}: key '{key}' cannot be read ({exc}); the file "
                                       f"is truncated or corrupt") from exc
    return out


def from_flat(
    arrays: dict[str, np.ndarray], meta: DatasetMeta, max_episode_steps: int | None = None,
    discount: float = 1.0,
) -> EpisodeDataset:
    """Split flat D4RL arrays into episodes and lay them out T+1 rows per episode."""
    src = meta.source
    obs = arrays["observations"]
    n = len(obs)
    if n == 0:
        raise DatasetError(f"{src}: dataset is empty ('observations' has 0 rows)")
    for key, arr in arrays.items():
        if len(arr) != n:
            raise DatasetError(f"{src}: '{key}' has {len(arr)} rows but 'observations' has {n}; "
                               f"all keys must have one row per step")
    if "next_observations" in arrays and arrays["next_observations"].shape != obs.shape:
        raise DatasetError(f"{src}: 'next_observations' shape {arrays['next_observations'].shape}"
                           f" != 'observations' shape {obs.shape}")
    rewards = arrays["rewards"].reshape(-1) if arrays["rewards"].ndim == 2 else arrays["rewards"]
    if rewards.ndim != 1:
        raise DatasetError(
            f"{src}: 'rewards' must be (N,) or (N, 1), got {arrays['rewards'].shape}")
    terminals = arrays["terminals"].reshape(n).astype(bool)
    if "timeouts" in arrays:
        timeouts = arrays["timeouts"].reshape(n).astype(bool) & ~terminals
    else:
        timeouts = _timeouts_from_length(terminals, max_episode_steps)
    ends = terminals | timeouts
    ends[-1] = True  # the data's end closes the last episode (as a truncation if not terminal)
    last = np.flatnonzero(ends)  # (E,) last step of each episode
    starts = np.concatenate([[0], last + 1])
    e = len(last)
    ep_terminated = terminals[last]
    has_next = "next_observations" in arrays
    # T+1 layout: insert each episode's final observation after its last step.
    step_rows = np.arange(n) + np.repeat(np.arange(e), np.diff(starts))
    final_rows = last + 1 + np.arange(e)
    full = np.empty((n + e, *obs.shape[1:]), dtype=np.float32)
    full[step_rows] = obs
    full[final_rows] = arrays["next_observations"][last] if has_next else obs[last]
    return EpisodeDataset(
        full, arrays["actions"], rewards, starts, ep_terminated, ~ep_terminated,
        # Terminal episodes never bootstrap, so their final obs is harmless even if repeated.
        final_obs_known=np.full(e, has_next) | ep_terminated,
        meta=meta, discount=discount,
    )


def _timeouts_from_length(terminals: np.ndarray, max_steps: int | None) -> np.ndarray:
    """Mark a time-out every `max_steps` steps since the last episode end (no `timeouts` key)."""
    timeouts = np.zeros_like(terminals)
    if not max_steps:
        return timeouts
    t = 0
    for i, term in enumerate(terminals):  # sequential by nature: each end resets the clock
        t += 1
        if term:
            t = 0
        elif t == max_steps:
            timeouts[i] = True
            t = 0
    return timeouts

