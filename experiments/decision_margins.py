"""How decided is a discrete-action Decision Transformer when it acts? Success and, over every
step it takes, the probability of the action it picks and the gap to the runner-up.

Why: on Key-to-Door's random-walk data the DT's training loss sits at ln 4 (a uniform choice
among 4 actions, which is what random walks are), and its return-conditioned signal is a
small dent in that. Acting takes the argmax of nearly tied logits, so small weight changes
between checkpoints can flip many decisions: this script measures how close the ties are, per
checkpoint, on the same episodes.

Each checkpoint (a file, or a run folder: every periodic `ckpt_<step>.pt` in it) acts in its
own env (the run's id and recorded kwargs) at one target return, through offrl's evaluator
and the DT policy's `on_prediction` hook; episode j resets its env with seed `--eval-seed + j`
for every checkpoint. Per checkpoint: success rate (or mean return), over all steps of all
episodes the mean and median softmax probability of the chosen (top-1) action, the median
top-1 minus top-2 probability, and the share of steps where that gap is below `--near`.

    .venv/bin/python experiments/decision_margins.py \\
        runs/compare/keytodoor/keytodoor-10k/runs/dt/seed{0,1,2} \\
        --target 1 --episodes 20 --out experiments/results/decision-margins/keytodoor-10k.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offrl.algorithms.dt import DT, DTPolicy
from offrl.checkpoint import load_checkpoint, periodic_checkpoints, restore_algorithm
from offrl.config import env_kwargs, from_dict
from offrl.evaluator import Evaluator


def checkpoints(paths: list[Path]) -> list[Path]:
    """Files as given; a run folder: its periodic checkpoints, oldest first."""
    out = []
    for path in paths:
        if path.is_dir():
            found = periodic_checkpoints(path / "checkpoints")
            if not found:
                raise SystemExit(f"{path}: no ckpt_<step>.pt in {path / 'checkpoints'}")
            out += [p for _, p in found]
        elif path.is_file():
            out.append(path)
        else:
            raise SystemExit(f"{path}: no such checkpoint file or run folder")
    return out


def margins(ckpt: Path, target: float, episodes: int, envs: int, seed: int,
            near: float) -> dict[str, Any]:
    payload = load_checkpoint(ckpt)
    algo = restore_algorithm(payload, "cpu", ckpt)
    if not isinstance(algo, DT) or not algo.spaces.discrete:
        raise SystemExit(f"{ckpt}: a discrete-action DT checkpoint is needed, got "
                         f"{payload['algo']} ({'discrete' if algo.spaces.discrete else 'Box'})")
    config = from_dict(payload["run_config"], f"{ckpt} run_config")
    env_id = payload.get("env_id")
    if env_id is None:
        raise SystemExit(f"{ckpt}: the run had no evaluation env")
    n = min(envs, episodes)
    policy = DTPolicy(algo, n)
    top1: list[np.ndarray] = []
    gap: list[np.ndarray] = []

    def record(logits: torch.Tensor) -> None:
        best = torch.softmax(logits, dim=-1).topk(2, dim=-1).values  # (N, 2)
        top1.append(best[:, 0].numpy())
        gap.append((best[:, 0] - best[:, 1]).numpy())

    policy.on_prediction = record
    with Evaluator(env_id, n, env_kwargs=env_kwargs(config, payload.get("env_kwargs"))) as ev:
        (res,) = ev.evaluate(policy, episodes, target_returns=(target,), seed=seed)
    # Every env steps until the slowest has run its quota; count only the steps of the
    # recorded episodes: each env's first sum(lengths of its episodes) rows.
    p1, g = np.stack(top1), np.stack(gap)  # (steps, N)
    keep = np.zeros_like(p1, dtype=bool)
    for e in range(n):
        keep[: int(res.lengths[e::n].sum()), e] = True
    p1, g = p1[keep], g[keep]
    out = {
        "checkpoint": str(ckpt), "step": int(payload["step"]), "steps_scored": int(p1.size),
        "return_mean": float(res.returns.mean()),
        "top1_prob_mean": float(p1.mean()), "top1_prob_median": float(np.median(p1)),
        "gap_median": float(np.median(g)), "near_tie_share": float(np.mean(g < near)),
        "uniform_prob": 1.0 / algo.spaces.act_dim,
    }
    if res.successes is not None:
        out["success_rate"] = float(res.successes.mean())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="checkpoint files or run folders")
    p.add_argument("--target", type=float, required=True, help="target return to act at")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--envs", type=int, default=10)
    p.add_argument("--eval-seed", type=int, default=1_000_000)
    p.add_argument("--near", type=float, default=0.05,
                   help="a step is a near tie when top-1 minus top-2 probability is below this")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.episodes < 1 or args.envs < 1:
        p.error("--episodes and --envs must be >= 1")
    torch.set_num_threads(1)
    rows = [margins(c, args.target, args.episodes, args.envs, args.eval_seed, args.near)
            for c in checkpoints(args.runs)]
    print("| checkpoint | step | success / return | top-1 prob mean / median | gap median | "
          "near ties |\n|" + "---|" * 6)
    for r in rows:
        score = r.get("success_rate", r["return_mean"])
        print(f"| {Path(r['checkpoint']).parent.parent.name}/{Path(r['checkpoint']).name} | "
              f"{r['step']} | {score:.2f} | {r['top1_prob_mean']:.3f} / "
              f"{r['top1_prob_median']:.3f} | {r['gap_median']:.3f} | "
              f"{r['near_tie_share']:.0%} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": shlex.join([sys.executable, *sys.argv]), "target": args.target,
                  "episodes": args.episodes, "eval_seed": args.eval_seed, "near": args.near,
                  "rows": rows}
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        tmp.replace(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
