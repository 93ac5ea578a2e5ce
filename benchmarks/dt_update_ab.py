"""DT training updates/s: this working tree against a baseline git revision, interleaved A/B
in one process (robust to a busy machine: both sides see the same load swings).

The baseline's `offrl/nn.py` and `algorithms/dt.py` are read from git (`--baseline`, default
HEAD) and imported as stand-alone modules next to the current ones; everything else (data,
sampler, base class, optimizer) is shared. Both sides get the same initial weights (the
baseline's state dict is loaded into the current model), the same batches (one sampler, each
batch fed to both) and run `DT.update` under the same precision (bf16 = `torch.autocast`, as
the trainer does). A round times `--updates` updates of each side, the order alternating
between rounds; reported: the median over rounds of per-round ratios current/baseline, and
the median updates/s per side.

    python benchmarks/dt_update_ab.py [--baseline HEAD] [--threads 1 2] [--precision fp32 bf16]
        [--rounds 7] [--updates 5] [--data PATH] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from offrl.algorithms.dt import DT, DTConfig
from offrl.datasets import load_dataset

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path.home() / ".cache" / "offrl-bench" / "hopper_synthetic_1000000_seed0.hdf5"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def baseline_dt(rev: str, tmp: Path) -> type:
    """The `DT` class of git revision `rev`, with that revision's offrl/nn.py."""
    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
    (tmp / "_baseline_nn.py").write_text(show("offrl/nn.py"))
    dt_src = show("algorithms/dt.py").replace("from offrl.nn import", "from _baseline_nn import")
    (tmp / "_baseline_dt.py").write_text(dt_src)
    sys.path.insert(0, str(tmp))
    _load("_baseline_nn", tmp / "_baseline_nn.py")
    return _load("_baseline_dt", tmp / "_baseline_dt.py").DT


def ab(data: Path, rev: str, threads: int, precision: str, rounds: int, updates: int
       ) -> dict[str, Any]:
    torch.set_num_threads(threads)
    ds = load_dataset(str(data))
    with tempfile.TemporaryDirectory() as tmp:
        old_cls = baseline_dt(rev, Path(tmp))
        torch.manual_seed(0)
        old = old_cls.from_dataset(old_cls.Config(), ds)  # the baseline's own DTConfig
        new = DT.from_dataset(DTConfig(), ds)
        new.model.load_state_dict(old.model.state_dict())
        sampler = new.make_sampler(ds, seed=0)
        ctx = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16"
               else contextlib.nullcontext)
        sides = {"baseline": old, "current": new}
        for algo in sides.values():  # warm-up: allocator, kernel selection
            for _ in range(3):
                with ctx():
                    algo.update(sampler.sample())
        rates: dict[str, list[float]] = {k: [] for k in sides}
        for r in range(rounds):
            batches = [sampler.sample() for _ in range(updates)]
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for name in order:
                algo = sides[name]
                t0 = time.perf_counter()
                for batch in batches:
                    with ctx():
                        algo.update(batch)
                rates[name].append(updates / (time.perf_counter() - t0))
    ratios = [c / b for c, b in zip(rates["current"], rates["baseline"], strict=True)]
    return {"threads": threads, "precision": precision, "rounds": rounds, "updates": updates,
            "ratio_median": statistics.median(ratios), "ratios": ratios,
            "baseline_updates_per_s": statistics.median(rates["baseline"]),
            "current_updates_per_s": statistics.median(rates["current"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default="HEAD", help="git revision to compare against")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"],
                   choices=["fp32", "bf16"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--updates", type=int, default=5, help="updates per side per round")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="D4RL-layout HDF5 (make bench writes the default one)")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    if not args.data.exists():
        p.error(f"--data {args.data} does not exist (run `make bench` once, or pass a file)")
    results = []
    for threads in args.threads:
        for precision in args.precision:
            res = ab(args.data, args.baseline, threads, precision, args.rounds, args.updates)
            results.append(res)
            print(f"threads {threads} {precision}: current/baseline {res['ratio_median']:.3f} "
                  f"(rounds {[round(x, 2) for x in res['ratios']]}); updates/s "
                  f"{res['baseline_updates_per_s']:.2f} -> {res['current_updates_per_s']:.2f}",
                  flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"baseline": args.baseline, "results": results},
                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
