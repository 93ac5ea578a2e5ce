"""Data-layer throughput on a 1M-transition hopper-shaped dataset (obs 11, action 3).

Measures: load time of a D4RL-format HDF5 file, SequenceSampler sequences/s (B=64, K=20),
TransitionSampler transitions/s (B=256). Median of 3 runs; prints a table and writes JSON.
Targets on 2 CPU cores: load < 5 s, >= 20,000 sequences/s, >= 1,000,000 transitions/s.

    python benchmarks/data_layer.py [--steps 1000000] [--threads auto]
        [--out benchmarks/results/data_layer.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from offrl.datasets import SequenceSampler, TransitionSampler, load_dataset


def make_file(path: Path, steps: int, seed: int = 0) -> None:
    """Hopper-shaped data: episodes of 1-1000 steps ending in terminals or time-outs."""
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < steps:
        lengths.append(int(rng.integers(20, 1001)))
    lengths[-1] -= sum(lengths) - steps
    ends = np.cumsum(lengths) - 1
    terminals = np.zeros(steps, bool)
    timeouts = np.zeros(steps, bool)
    full = np.array(lengths) == 1000
    terminals[ends[~full]] = True
    timeouts[ends[full]] = True
    obs = rng.normal(size=(steps, 11)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["observations"] = obs
        f["next_observations"] = np.roll(obs, -1, axis=0)
        f["actions"] = rng.uniform(-1, 1, (steps, 3)).astype(np.float32)
        f["rewards"] = rng.normal(size=steps).astype(np.float32)
        f["terminals"] = terminals
        f["timeouts"] = timeouts


def busy_machine(cores: int | None = None) -> bool:
    """Whether other processes already hold at least half the cores (1-minute load average).
    Multi-threaded torch ops then wait at every OpenMP barrier for a descheduled sibling:
    measured on a 2-core machine at load 10, SequenceSampler ran 50x and BC training 15-19x
    slower at 2 threads than at 1, so a multi-thread rate measures the scheduler."""
    cores = cores or os.cpu_count() or 1
    return cores > 1 and os.getloadavg()[0] > cores / 2


def rate(fn, items_per_call: int, seconds: float = 2.0) -> float:
    fn()  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n * items_per_call / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="auto",
                        help="torch threads; auto: torch's default, or 1 on a busy machine")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/data_layer.json"))
    args = parser.parse_args()
    if args.threads == "auto":
        if busy_machine():
            torch.set_num_threads(1)
    else:
        torch.set_num_threads(int(args.threads))
    load_start = list(os.getloadavg())
    results: dict[str, list[float]] = {"load_s": [], "sequences_per_s": [],
                                       "transitions_per_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hopper_bench.hdf5"
        make_file(path, args.steps)
        for _ in range(args.repeats):
            start = time.perf_counter()
            ds = load_dataset(path, env_id="Hopper-v5")
            results["load_s"].append(time.perf_counter() - start)
            seq = SequenceSampler(ds, batch_size=64, context=20, return_scale=1000.0, seed=0)
            tr = TransitionSampler(ds, batch_size=256, seed=0)
            results["sequences_per_s"].append(rate(seq.sample, 64))
            results["transitions_per_s"].append(rate(tr.sample, 256))
    targets = {"load_s": ("<", 5.0), "sequences_per_s": (">=", 20_000),
               "transitions_per_s": (">=", 1_000_000)}
    summary = {"steps": args.steps, "torch_threads": torch.get_num_threads(),
               "load_average_start": load_start}
    print(f"{'metric':<20}{'median':>14}{'target':>14}  ok")
    for key, values in results.items():
        med = statistics.median(values)
        op, target = targets[key]
        ok = med < target if op == "<" else med >= target
        summary[key] = {"median": med, "runs": values, "target": f"{op} {target}", "ok": ok}
        goal = f"{op} {target:,}"
        print(f"{key:<20}{med:>14,.2f}{goal:>14}  {'yes' if ok else 'NO'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(summary, indent=1))
    tmp_out.replace(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
