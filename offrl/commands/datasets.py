"""`offrl datasets info <source>` and `offrl datasets list`."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import tyro

from offrl.cli import parse
from offrl.datasets import SOURCE_HELP, DatasetError, EpisodeDataset, load_dataset


@dataclass
class InfoArgs:
    """Summarize a dataset: episodes, steps, spaces, returns, reference scores."""

    source: Annotated[str, tyro.conf.Positional]
    """Dataset: minari:<id> | d4rl:<name> | path (.hdf5, .pkl, .npz, Minari directory)."""
    env_id: str | None = None
    """Gymnasium id of the env the data came from, when the source does not say."""
    download: bool = False
    """Allow downloading minari:/d4rl: sources that are not cached (needs network)."""
    json: bool = False
    """Print the summary as JSON instead of text."""


def summarize(ds: EpisodeDataset) -> dict:
    returns, lengths = ds.episode_returns, ds.episode_lengths
    out = {
        "name": ds.meta.name,
        "source": ds.meta.source,
        "env_id": ds.meta.env_id,
        "episodes": ds.num_episodes,
        "steps": ds.num_steps,
        "observation_space": str(ds.observation_space),
        "action_space": str(ds.action_space),
        "terminated": int(ds.terminated.sum()),
        "truncated": int(ds.truncated.sum()),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "length_mean": float(lengths.mean()),
        "ref_min_score": ds.meta.ref_min_score,
        "ref_max_score": ds.meta.ref_max_score,
    }
    if ds.normalized_score(0.0) is not None:
        out["normalized_score_mean"] = float(np.mean(ds.normalized_score(returns)))
    return out


def info(argv: Sequence[str], prog: str) -> int:
    args = parse(InfoArgs, argv, prog)
    try:
        ds = load_dataset(args.source, env_id=args.env_id, download=args.download)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = summarize(ds)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    width = max(map(len, summary))
    for key, value in summary.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")
    return 0


@dataclass
class ListArgs:
    """List the dataset names offrl knows: published D4RL names and local Minari datasets."""

    json: bool = False
    """Print as JSON."""


def list_(argv: Sequence[str], prog: str) -> int:
    args = parse(ListArgs, argv, prog)
    from offrl.datasets.d4rl import D4RL_URLS, d4rl_path

    rows = [{"source": f"d4rl:{name}", "cached": d4rl_path(name).exists()}
            for name in sorted(D4RL_URLS)]
    try:
        import minari

        local = sorted(minari.list_local_datasets())
    except Exception:  # an unreadable local cache must not break listing D4RL names
        local = []
    rows += [{"source": f"minari:{name}", "cached": True} for name in local]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for row in rows:
            print(f"{row['source']:<40} {'cached' if row['cached'] else 'not cached'}")
        print(f"\nsources: {SOURCE_HELP}")
    return 0
