"""Train d3rlpy 2.8.1 BC / CQL / DT on a D4RL-layout HDF5 file and save it for offrl.

Runs with `.venv-d3rlpy/bin/python` (d3rlpy pins gymnasium 1.0.0). The configurations are
the training benchmark's (benchmarks/d3rlpy_worker.py), which mirror offrl's defaults:
BC 256x2 MLP, batch 256, Adam 3e-4; CQL with twin critics and actor 256x3, batch 256, 10
sampled actions, a fixed conservative weight of 5 (offrl's default non-Lagrange CQL).
With `--config-json FILE` (CQL, DT) the d3rlpy config is built from that file instead: the
keyword arguments `benchmarks/peers/d3rlpy_config.py` maps from an offrl config (the peer
check writes it; DT needs it, there is no default DT here). Training is d3rlpy's own `fit`
for `--steps` gradient steps, logged per `--steps-per-epoch` (default min(steps, 10k)).
The output folder gets:
- `policy.pt` (BC, CQL): d3rlpy's `save_policy` TorchScript (observation scaler included;
  greedy action in the env's units), scored by `benchmarks/peers/d3rlpy_policy.py` with
  offrl's evaluator, i.e. the same protocol as offrl's runs;
- `model.d3`: the full d3rlpy learnable (`d3rlpy.load_learnable`);
- `peer.json`: algorithm, steps, seed, wall time, d3rlpy config.

DT gets no policy.pt: d3rlpy's TorchScript DT traces a fixed-length window with every mask
set to zero, so short (left-padded) histories at the start of an episode would not be
masked as in d3rlpy's own `StatefulTransformerWrapper`. Its model.d3 is served to offrl's
evaluator through that wrapper instead (`benchmarks/peers/d3rlpy_dt_actor.py`).

    .venv-d3rlpy/bin/python benchmarks/peers/d3rlpy_train.py --data data.hdf5 --algo cql \\
        --steps 100000 --seed 0 --out runs/peers/cql-0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # d3rlpy_worker.py (a script)
from d3rlpy_worker import load_dataset, make_algo  # noqa: E402
from peers.d3rlpy_config import build_d3rlpy_config, build_d3rlpy_dt_config  # noqa: E402


def steps_per_epoch(steps: int, per_epoch: int | None) -> int:
    """d3rlpy logs (and saves its model) once per epoch; `fit` runs whole epochs only."""
    per = min(steps, 10_000) if per_epoch is None else per_epoch
    if per < 1 or steps % per:
        raise SystemExit(f"--steps {steps} must be a multiple of --steps-per-epoch {per}")
    return per


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="D4RL-layout HDF5 file")
    p.add_argument("--algo", required=True, choices=("bc", "cql", "dt"))
    p.add_argument("--steps", type=int, required=True, help="gradient steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config-json", type=Path, default=None,
                   help="CQL / DT: d3rlpy config arguments (d3rlpy_config.cql_kwargs / "
                   "dt_kwargs) instead of the benchmark's configuration")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="log interval (default: min(steps, 10000), rounding steps down to a "
                   "multiple of it)")
    args = p.parse_args()
    if args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}")
    if args.config_json is not None and args.algo == "bc":
        raise SystemExit("--config-json is for --algo cql | dt")
    if args.config_json is None and args.algo == "dt":
        raise SystemExit("--algo dt needs --config-json (d3rlpy_config.dt_kwargs)")
    import d3rlpy

    if args.threads:
        torch.set_num_threads(args.threads)
    d3rlpy.seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(args.data)
    kwargs = None
    if args.config_json is not None:
        kwargs = json.loads(args.config_json.read_text())
        build = build_d3rlpy_dt_config if args.algo == "dt" else build_d3rlpy_config
        algo = build(kwargs).create(device="cpu:0")
    else:
        algo, _ = make_algo(args.algo, dataset, "cpu:0")
    if args.steps_per_epoch is None:  # the BC peer check's original rule (kept bit for bit)
        per_epoch = min(args.steps, 10_000)
        n_steps = per_epoch * max(1, args.steps // per_epoch)
    else:
        per_epoch = steps_per_epoch(args.steps, args.steps_per_epoch)
        n_steps = args.steps
    t0 = time.perf_counter()
    algo.fit(dataset, n_steps=n_steps,
             n_steps_per_epoch=per_epoch, show_progress=False, experiment_name="fit",
             with_timestamp=False,
             logger_adapter=d3rlpy.logging.FileAdapterFactory(root_dir=str(args.out / "logs")))
    wall = time.perf_counter() - t0
    if args.algo != "dt":
        algo.save_policy(str(args.out / "policy.pt"))
    algo.save(str(args.out / "model.d3"))
    meta = {"algo": args.algo, "library": f"d3rlpy {d3rlpy.__version__}",
            "steps": n_steps, "steps_per_epoch": per_epoch, "seed": args.seed,
            "data": str(args.data), "wall_time_s": wall,
            "config": json.loads(algo.config.serialize())}
    if kwargs is not None:
        meta["config_kwargs"] = kwargs  # what the peer check asked for (its resume check)
    (args.out / "peer.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"d3rlpy {args.algo}: {meta['steps']} steps in {wall:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
