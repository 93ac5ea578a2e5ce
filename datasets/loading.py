"""`load_dataset(source)`: the one entry point from a source string to an `EpisodeDataset`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from offrl.datasets.core import DatasetError, EpisodeDataset
from offrl.envs.facts import find_env_facts

SOURCE_HELP = (
    "minari:<dataset_id> | d4rl:<name> | path to a Minari dataset directory, a D4RL-layout "
    ".hdf5 file, a trajectory .pkl/.pickle, or an expert .npz"
)


def load_dataset(
    source: str | Path, *, download: bool = False, env_id: str | None = None,
    discount: float = 1.0, max_episode_steps: int | None = None,
) -> EpisodeDataset:
    """Load any supported source. `env_id` names the evaluation env when the source does
    not (pickles, npz, plain HDF5); it also supplies action spaces and reference scores.

    The env kwargs a Minari dataset recorded (`meta.env_kwargs`) are kept when `env_id` is
    None or the recorded id, and dropped for another id (they belong to the recorded env)."""
    from offrl.datasets import d4rl, minari_io, trajectories

    s = str(source)
    if s.startswith("minari:"):
        ds = minari_io.load_minari(s, download=download, discount=discount)
    elif s.startswith("d4rl:"):
        ds = d4rl.load_d4rl(s, download=download, env_id=env_id,
                            max_episode_steps=max_episode_steps, discount=discount)
    else:
        path = Path(s)
        if not path.exists():
            raise DatasetError(f"dataset source '{s}' not found; expected {SOURCE_HELP}")
        suffix = path.suffix.lower()
        if path.is_dir():
            ds = minari_io.load_minari(path, discount=discount)
        elif suffix in (".hdf5", ".h5"):
            ds = d4rl.load_d4rl(path, env_id=env_id, max_episode_steps=max_episode_steps,
                                discount=discount)
        elif suffix in (".pkl", ".pickle"):
            ds = trajectories.load_pickle(path, discount=discount)
        elif suffix == ".npz":
            facts = find_env_facts(env_id)
            ds = trajectories.load_npz(
                path, discount=discount,
                max_episode_steps=max_episode_steps or (facts.max_episode_steps if facts else None))
        else:
            raise DatasetError(f"{path}: unknown dataset format '{suffix}'; expected {SOURCE_HELP}")
    if env_id is not None:
        facts = find_env_facts(env_id)
        if env_id != ds.meta.env_id:
            ds.meta.env_kwargs = {}
        ds.meta.env_id = env_id
        if facts is not None and ds.meta.ref_min_score is None:
            ds.meta.ref_min_score, ds.meta.ref_max_score = facts.ref_min_score, facts.ref_max_score
    if ds.meta.env_id is not None:
        # An id guessed from a file name may not fit the data: then keep the inferred spaces.
        apply_env_spaces(ds, ds.meta.env_id, strict=env_id is not None,
                         env_kwargs=ds.meta.env_kwargs)
    return ds


def apply_env_spaces(ds: EpisodeDataset, env_id: str, *, strict: bool,
                     env_kwargs: dict[str, Any] | None = None) -> None:
    """Take the spaces of `make_env(env_id, **env_kwargs)` when the data fits them; Discrete
    actions stored as float (N, 1) become integers. A misfit is an error when the caller
    named the env."""
    import gymnasium as gym
    import numpy as np

    from offrl.envs.make import env_spaces

    src = ds.meta.source
    try:
        obs_space, act_space = env_spaces(env_id, env_kwargs)
    except (gym.error.Error, TypeError, ValueError) as exc:  # TypeError, ValueError: bad kwargs
        if strict:
            raise DatasetError(f"{src}: cannot make env '{env_id}'{_with(env_kwargs)} "
                               f"({exc})") from exc
        return
    problem = None
    if obs_space.shape != ds.observations.shape[1:]:
        problem = (f"observations have shape {ds.observations.shape[1:]}, "
                   f"{env_id}{_with(env_kwargs)} gives {obs_space}")
    elif isinstance(act_space, gym.spaces.Discrete):
        a = ds.actions
        if not ds.discrete and (a.shape[1] != 1 or not np.all(a == np.round(a))):
            problem = (f"actions have shape {a.shape[1:]} or are not integral; "
                       f"{env_id} has {act_space}")
        elif a.min() < 0 or a.max() >= act_space.n:
            problem = f"actions range over [{a.min()}, {a.max()}], {env_id} has {act_space}"
    elif ds.discrete or act_space.shape != ds.actions.shape[1:]:
        problem = f"actions have shape {ds.actions.shape[1:]}, {env_id} expects {act_space}"
    if problem is not None:
        if strict:
            raise DatasetError(f"{src}: {problem}")
        return
    if isinstance(act_space, gym.spaces.Discrete) and not ds.discrete:
        ds.actions = ds.actions.reshape(-1).astype(np.int64)
        ds.discrete = True
    ds.observation_space, ds.action_space = obs_space, act_space


def _with(env_kwargs: dict[str, Any] | None) -> str:
    return f" (kwargs {env_kwargs})" if env_kwargs else ""
