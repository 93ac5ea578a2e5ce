"""DT training losses of this working tree against a baseline git revision, fp32 and bf16, on
the same batches from the same initial weights: do the current implementation's numerics
(bf16 autocast in particular) stay as close to fp32 as the baseline's?

Runs, all in one process, one after another: baseline fp32, baseline bf16, current fp32,
current bf16 (bf16 = `torch.autocast`, as the trainer does). Every run starts from the same
weights (the baseline model's initial state dict) and sees the same `--updates` batches (one
sampler, drawn once). The dropout masks differ between baseline and current (different random
streams, same distribution), so baseline fp32 vs current fp32 is the scale of the dropout
noise; bf16 vs fp32 of the same implementation uses the same masks (the mask draws do not
depend on the precision) and isolates the rounding. Reported per window of `--window`
updates: each run's mean loss, and the mean |bf16 - fp32| / fp32 per update.

    MINARI_DATASETS_PATH=~/.minari/datasets python benchmarks/dt_loss_ab.py \\
        [--dataset minari:offrl-mujoco/hopper/medium-replay-v0] [--updates 300] \\
        [--baseline HEAD] [--threads 1] [--warmup-steps N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.dt_update_ab import baseline_dt
from offrl.algorithms.dt import DT, DTConfig
from offrl.datasets import load_dataset


def run(algo: Any, init: dict[str, torch.Tensor], batches: list, precision: str,
        seed: int) -> tuple[list[float], float]:
    algo.model.load_state_dict(init)
    torch.manual_seed(seed)  # the dropout masks' stream
    ctx = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16"
           else contextlib.nullcontext)
    losses = []
    t0 = time.perf_counter()
    for batch in batches:
        with ctx():
            losses.append(algo.update(batch)["loss"])
    return losses, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="minari:offrl-mujoco/hopper/medium-replay-v0")
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--baseline", default="HEAD")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="DTConfig.warmup_steps for every run (default: DTConfig's 10k, whose "
                        "learning rate stays tiny over a few hundred updates)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        old_cls = baseline_dt(args.baseline, Path(tmp))
        torch.manual_seed(args.seed)
        # fresh algorithms per run: optimizer state and LR schedule start from zero each time
        kw = {} if args.warmup_steps is None else {"warmup_steps": args.warmup_steps}
        make = {"baseline": lambda: old_cls.from_dataset(old_cls.Config(**kw), ds),
                "current": lambda: DT.from_dataset(DTConfig(**kw), ds)}
        first = make["baseline"]()
        init = {k: v.clone() for k, v in first.model.state_dict().items()}
        sampler = first.make_sampler(ds, seed=args.seed)
        batches = [sampler.sample() for _ in range(args.updates)]
        losses: dict[str, list[float]] = {}
        seconds: dict[str, float] = {}
        for impl in ("baseline", "current"):
            for precision in ("fp32", "bf16"):
                name = f"{impl}-{precision}"
                losses[name], seconds[name] = run(make[impl](), init, batches, precision,
                                                  args.seed)
                print(f"{name}: {args.updates} updates in {seconds[name]:.0f} s", flush=True)
    w = args.window
    windows = []
    for s in range(0, args.updates, w):
        row: dict[str, Any] = {"updates": f"{s + 1}-{min(s + w, args.updates)}"}
        for name, values in losses.items():
            row[name] = statistics.fmean(values[s:s + w])
        for impl in ("baseline", "current"):
            f32, b16 = losses[f"{impl}-fp32"][s:s + w], losses[f"{impl}-bf16"][s:s + w]
            row[f"{impl} |bf16-fp32|/fp32"] = statistics.fmean(
                abs(b - f) / abs(f) for b, f in zip(b16, f32, strict=True))
        row["|current-baseline|/baseline fp32"] = statistics.fmean(
            abs(c - b) / abs(b) for c, b in zip(losses["current-fp32"][s:s + w],
                                                losses["baseline-fp32"][s:s + w], strict=True))
        windows.append(row)
    keys = list(windows[0])
    print(" | ".join(keys))
    for row in windows:
        print(" | ".join(v if isinstance(v, str) else f"{v:.5f}" for v in row.values()))
    if args.out is not None:
        args.out.write_text(json.dumps({"dataset": args.dataset, "baseline": args.baseline,
                                        "warmup_steps": args.warmup_steps,
                                        "seconds": seconds, "windows": windows,
                                        "losses": losses}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
