"""bf16 vs fp32 training on a real dataset: the same runs (same config, seeds and evaluation
protocol) with `precision: fp32` and `precision: bf16`, compared on their training loss and
their evaluation curves.

Why: `--precision bf16` (autocast, fp32 master weights) is what makes DT and CQL affordable on
CPU, and the hopper study uses it; issue #8 asks that its learning curves match fp32 within
seed noise on a real dataset. The loss curves compare tightly (same seed, same batches); the
evaluation curves are compared against the spread over seeds.

    python experiments/precision_check.py --fp32 runs/bf16-check/dt-fp32-seed{0,1,2} \\
        --bf16 runs/compare/hopper/hopper-medium-replay/runs/dt/seed{0,1,2} \\
        --out experiments/results/precision-check/hopper-medium-replay-dt

CQL works the same way (its critic loss is the loss compared).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

# The training loss compared: DT's and BC's loss, CQL's critic loss (TD + conservative terms).
LOSS_KEYS = ("train/loss", "train/critic_loss")


def read_run(folder: Path) -> dict[str, Any]:
    """A finished run's training loss per log step, primary evaluation score per eval step,
    precision and seed (from its summary.json, metrics.jsonl and config.yaml)."""
    import yaml

    missing = [n for n in ("summary.json", "config.yaml", "metrics.jsonl")
               if not (folder / n).is_file()]
    if missing:
        raise SystemExit(f"{folder}: not a finished run folder (missing {', '.join(missing)})")
    summary = json.loads((folder / "summary.json").read_text())
    if summary.get("status") != "finished":
        raise SystemExit(f"{folder}: run did not finish ({summary.get('status')})")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    loss, score = {}, {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        key = next((k for k in LOSS_KEYS if k in row), None)
        if key is not None:
            loss[row["step"]] = row[key]
        for key in ("eval/normalized_score", "eval/success_rate", "eval/return_mean"):
            if key in row:
                score[row["step"]] = row[key]
                break
    return {"folder": str(folder), "seed": config["seed"], "precision": config["precision"],
            "updates_per_s": summary.get("updates_per_s"), "loss": loss, "score": score}


def stats(values: list[float]) -> dict[str, float]:
    """Mean and sample std (`seed_stats`, the compare report's; std 0 for a single run)."""
    from offrl.compare_report import seed_stats

    s = seed_stats(values)
    return {"mean": s["mean"], "std": s["std"] if s["std"] is not None else 0.0}


def compare(fp32: list[dict[str, Any]], bf16: list[dict[str, Any]]) -> dict[str, Any]:
    """Per evaluation step: mean +- std over seeds of each side; per seed present on both
    sides: the mean relative training-loss difference over the run."""
    steps = sorted(set.intersection(*(set(r["score"]) for r in fp32 + bf16)))
    curves = [{"step": s, "fp32": stats([r["score"][s] for r in fp32]),
               "bf16": stats([r["score"][s] for r in bf16])} for s in steps]
    pairs = []
    for a in fp32:
        b = next((r for r in bf16 if r["seed"] == a["seed"]), None)
        if b is None:
            continue
        common = sorted(set(a["loss"]) & set(b["loss"]))
        rel = [abs(b["loss"][s] - a["loss"][s]) / abs(a["loss"][s]) for s in common]
        pairs.append({"seed": a["seed"], "loss_points": len(common),
                      "mean_rel_loss_diff": statistics.fmean(rel) if rel else None,
                      "final_loss_fp32": a["loss"][common[-1]] if common else None,
                      "final_loss_bf16": b["loss"][common[-1]] if common else None})
    return {"eval_curves": curves, "loss_pairs": pairs,
            "final": {"fp32": stats([r["score"][steps[-1]] for r in fp32]),
                      "bf16": stats([r["score"][steps[-1]] for r in bf16])} if steps else None}


def plot(result: dict[str, Any], runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(11, 4))
    for side, color in (("fp32", "tab:blue"), ("bf16", "tab:orange")):
        for i, run in enumerate(runs[side]):
            steps = sorted(run["loss"])
            ax_loss.plot(steps, [run["loss"][s] for s in steps], color=color, alpha=0.6,
                         label=side if i == 0 else None)
        curve = result["eval_curves"]
        x = [c["step"] for c in curve]
        mean = [c[side]["mean"] for c in curve]
        std = [c[side]["std"] for c in curve]
        ax_eval.plot(x, mean, marker="o", color=color, label=f"{side} (n={len(runs[side])})")
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        ax_eval.fill_between(x, low, high, color=color, alpha=0.2)
    ax_loss.set(xlabel="gradient step", ylabel="training loss", yscale="log",
                title="training loss, one line per seed")
    ax_eval.set(xlabel="gradient step", ylabel="evaluation score",
                title="evaluation, mean +- std over seeds")
    for ax in (ax_loss, ax_eval):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fp32", nargs="+", type=Path, required=True)
    parser.add_argument("--bf16", nargs="+", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = {"fp32": [read_run(f) for f in args.fp32], "bf16": [read_run(f) for f in args.bf16]}
    for side, expected in (("fp32", "fp32"), ("bf16", "bf16")):
        wrong = [r["folder"] for r in runs[side] if r["precision"] != expected]
        if wrong:
            raise SystemExit(f"--{side} runs trained with another precision: {wrong}")
    result = compare(runs["fp32"], runs["bf16"])
    result["runs"] = {side: [{k: r[k] for k in ("folder", "seed", "updates_per_s")}
                             for r in rs] for side, rs in runs.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision_check.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, runs, args.out / "precision_check.png")
    for c in result["eval_curves"]:
        print(f"step {c['step']:>6}: fp32 {c['fp32']['mean']:.1f} +- {c['fp32']['std']:.1f}"
              f"   bf16 {c['bf16']['mean']:.1f} +- {c['bf16']['std']:.1f}")
    for p in result["loss_pairs"]:
        print(f"seed {p['seed']}: mean relative loss difference {p['mean_rel_loss_diff']:.4f} "
              f"over {p['loss_points']} log points")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
