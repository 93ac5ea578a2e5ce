"""Write any offrl dataset source as a D4RL-layout HDF5 file, the format d3rlpy reads.

Keys: observations, next_observations, actions, rewards, terminals, timeouts (one row per
step). `terminals` marks true terminations only; every other episode end is a time-out
(truncated episodes, and the open end of a buffer), so a reader splits episodes exactly
where offrl does and bootstraps through the same steps. Where offrl does not know the
observation after an episode's last step, next_observations repeats the last observation
(that step is a time-out, whose successor a TD learner never uses).

    python -m benchmarks.peers.export_d4rl SOURCE OUT.hdf5 [--env-id Hopper-v5]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import h5py
import numpy as np

from offrl.datasets import EpisodeDataset, load_dataset


def export_d4rl(dataset: EpisodeDataset, path: Path) -> Path:
    """Write `dataset` to `path` (atomically: a temporary file, then a rename)."""
    idx = dataset.obs_index  # (N,) rows of each step's observation; row + 1 is its successor
    ends = dataset.episode_starts[1:] - 1  # (E,) last step of each episode
    terminals = dataset.terminals
    timeouts = np.zeros(dataset.num_steps, dtype=bool)
    timeouts[ends[~dataset.terminated]] = True
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with h5py.File(tmp, "w") as f:
        f["observations"] = dataset.observations[idx]
        f["next_observations"] = dataset.observations[idx + 1]
        f["actions"] = dataset.actions
        f["rewards"] = dataset.rewards.astype(np.float32)
        f["terminals"] = terminals
        f["timeouts"] = timeouts
        f.attrs["source"] = dataset.meta.source or dataset.meta.name
        if dataset.meta.env_id:
            f.attrs["env_id"] = dataset.meta.env_id
    tmp.replace(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="any offrl dataset source (minari:, d4rl:, a path)")
    p.add_argument("out", type=Path)
    p.add_argument("--env-id", default=None)
    args = p.parse_args()
    ds = load_dataset(args.source, env_id=args.env_id)
    export_d4rl(ds, args.out)
    print(f"wrote {args.out}: {ds.num_episodes} episodes, {ds.num_steps} steps")


if __name__ == "__main__":
    main()
