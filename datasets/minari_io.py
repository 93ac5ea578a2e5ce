"""Minari datasets: `minari:<id>` from the local cache (download optional) or a directory,
and `write_minari`, which records episodes as a Minari dataset atomically.

Loading keeps the stored env spec's id and kwargs (`DatasetMeta.env_id`, `.env_kwargs`): a
dataset recorded with `gym.make(id, **kwargs)` (e.g. Key-to-Door with obs_mode="grid") is
evaluated in that same env. `write_minari` stores them when given an env instance."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offrl.datasets.core import DatasetError, DatasetMeta, EpisodeDataset
from offrl.envs.facts import find_env_facts
from offrl.types import Episode


def _data_dir(source: str | Path, download: bool) -> tuple[Path, str | None]:
    import minari

    if isinstance(source, str) and source.startswith("minari:"):
        dataset_id = source[len("minari:"):]
        root = minari.storage.get_dataset_path(dataset_id)
        data = Path(root) / "data"
        if not data.exists():
            if not download:
                raise DatasetError(
                    f"Minari dataset '{dataset_id}' is not present locally ({root}); pass "
                    f"download=True (needs network: `minari download {dataset_id}`), or build "
                    f"one offline with `offrl collect`")
            try:
                minari.download_dataset(dataset_id)
            except Exception as exc:  # network errors come in many types from the hosting lib
                raise DatasetError(
                    f"could not download Minari dataset '{dataset_id}': {exc}. Without network, "
                    f"copy the dataset directory to {root} or build one with `offrl collect`"
                ) from exc
        return data, dataset_id
    path = Path(source)
    for cand in (path / "data", path):
        if (cand / "metadata.json").exists():
            return cand, None
    raise DatasetError(f"{path}: not a Minari dataset directory (no metadata.json in it or in "
                       f"its data/ folder)")


def _env_of(spec: object) -> tuple[str | None, dict[str, Any]]:
    """(env id, gym.make kwargs) of the env spec Minari stored (an EnvSpec, or its JSON).

    All the spec's kwargs are kept, registry defaults included, so the evaluation env is the
    recorded one even if a registration's defaults change later. `render_mode` is dropped:
    evaluation does not render, and `record_video` sets its own."""
    if isinstance(spec, str):  # Minari 0.5 stores the spec as JSON
        spec = gym.envs.registration.EnvSpec.from_json(spec)
    env_id = getattr(spec, "id", None)
    kwargs = dict(getattr(spec, "kwargs", None) or {})
    kwargs.pop("render_mode", None)
    return env_id, kwargs


def load_minari(
    source: str | Path, *, download: bool = False, discount: float = 1.0
) -> EpisodeDataset:
    import minari

    data_dir, dataset_id = _data_dir(source, download)
    try:
        ds = minari.MinariDataset(data_dir)
    except Exception as exc:  # corrupt metadata or storage: minari raises assorted types
        raise DatasetError(f"{data_dir}: cannot open as a Minari dataset ({exc})") from exc
    if not isinstance(ds.observation_space, gym.spaces.Box):
        raise DatasetError(f"{data_dir}: observation space {ds.observation_space} is not a Box; "
                           f"flatten Dict/Tuple observations before loading")
    if not isinstance(ds.action_space, gym.spaces.Box | gym.spaces.Discrete):
        raise DatasetError(f"{data_dir}: action space {ds.action_space} is not Box or Discrete")
    episodes = []
    for ep in ds.iterate_episodes():
        if len(ep.actions) == 0:
            raise DatasetError(f"{data_dir}: episode {ep.id} has zero steps")
        episodes.append(Episode(
            observations=np.asarray(ep.observations, dtype=np.float32),
            actions=np.asarray(ep.actions),
            rewards=np.asarray(ep.rewards, dtype=np.float32),
            terminated=bool(ep.terminations[-1]),
            truncated=not bool(ep.terminations[-1]),
        ))
    md = ds.storage.metadata
    env_id, env_kwargs = _env_of(md.get("eval_env_spec") or md.get("env_spec"))
    facts = find_env_facts(env_id)
    meta = DatasetMeta(
        name=dataset_id or md.get("dataset_id", data_dir.parent.name),
        source=str(data_dir), env_id=env_id,
        ref_min_score=md.get("ref_min_score", facts.ref_min_score if facts else None),
        ref_max_score=md.get("ref_max_score", facts.ref_max_score if facts else None),
        extra={"algorithm_name": md.get("algorithm_name")},
        env_kwargs=env_kwargs,
    )
    return EpisodeDataset.from_episodes(
        episodes, observation_space=ds.observation_space, action_space=ds.action_space,
        meta=meta, discount=discount,
    )


@contextmanager
def _minari_root(path: Path):
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_minari(
    dataset_id: str, episodes: Sequence[Episode], *, env_id: str | gym.Env,
    root: str | Path | None = None, ref_min_score: float | None = None,
    ref_max_score: float | None = None, algorithm_name: str | None = None,
    description: str | None = None, force: bool = False,
) -> Path:
    """Write episodes as Minari dataset `dataset_id` under `root` (default: Minari's cache).

    `env_id`: a gymnasium id, or an env made with kwargs (`make_env(id, obs_mode="grid")`):
    Minari stores the instance's spec, kwargs included, and `load_minari` restores them.

    Built in a temporary directory beside the target and renamed into place, so an
    interrupted write never leaves a half dataset; refuses to overwrite unless `force`.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    if not episodes:
        raise DatasetError(f"{dataset_id}: no episodes to write")
    if (ref_min_score is None) != (ref_max_score is None):
        # Given one alone, Minari estimates the other from 100 unseeded random rollouts:
        # the dataset would differ from run to run.
        raise DatasetError(f"{dataset_id}: pass both ref_min_score and ref_max_score or "
                           f"neither (got {ref_min_score}, {ref_max_score})")
    root = Path(root) if root is not None else Path(minari.storage.get_dataset_path()).resolve()
    target = root / dataset_id
    if target.exists() and not force:
        raise DatasetError(f"{target} exists; pass force=True (--force) to overwrite it")
    root.mkdir(parents=True, exist_ok=True)
    buffers = [
        EpisodeBuffer(
            id=i, observations=ep.observations, actions=ep.actions, rewards=ep.rewards,
            terminations=np.eye(1, ep.length, ep.length - 1, dtype=bool)[0] & ep.terminated,
            truncations=np.eye(1, ep.length, ep.length - 1, dtype=bool)[0] & ~ep.terminated,
        )
        for i, ep in enumerate(episodes)
    ]
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        with _minari_root(tmp), warnings.catch_warnings():
            # Minari nags about optional metadata (author e-mail, ...) being None.
            warnings.filterwarnings("ignore", message=".*is set to None", category=UserWarning)
            minari.create_dataset_from_buffers(
                dataset_id, buffers, env=env_id, eval_env=env_id,
                algorithm_name=algorithm_name or "unknown", author="offrl",
                ref_min_score=ref_min_score, ref_max_score=ref_max_score,
                description=description or f"{len(episodes)} episodes recorded by offrl",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / dataset_id, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
