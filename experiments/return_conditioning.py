"""Return conditioning of trained Decision Transformers: achieved vs target return (the DT
paper's Figure 4, Chen et al. 2021, https://arxiv.org/abs/2106.01345).

Each run (a finished `offrl train` run folder, or a checkpoint file) is evaluated with offrl's
own evaluator (`offrl.evaluator.evaluate_checkpoint`) at every target of a grid. Every target
and every run replays the same episodes: episode j resets its env with seed `--eval-seed + j`.
A run folder is evaluated at its FINAL checkpoint (the newest `ckpt_<step>.pt`, checked
against the step in its summary.json), never at `best.pt`, which was picked with online
evaluations.

The "achieved" quantity is the success rate where the env reports success (Key-to-Door:
targets 0..1 are success rates too), else the raw undiscounted return (MuJoCo; normalized
scores are recorded beside it and shown on the right axis). Statistics over runs: each run's
mean over its episodes, then the mean and sample std (n - 1) of those over runs (the seeds).

    .venv/bin/python experiments/return_conditioning.py \\
        runs/compare/keytodoor/keytodoor-1k/runs/dt/seed{0,1,2} \\
        --out experiments/results/return-conditioning/keytodoor-1k

Writes OUT/return_conditioning.json (per target: mean/std over seeds, per-seed values and
per-episode returns; the dataset's return distribution; the protocol; the exact command;
versions) and OUT/return_conditioning.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEY_TO_DOOR_TARGETS = (0.0, 0.25, 0.5, 0.75, 1.0)


def is_key_to_door(env_id: str) -> bool:
    return "KeyToDoor" in env_id


def nice_step(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= x (x > 0)."""
    base = 10.0 ** math.floor(math.log10(x))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= x * (1 - 1e-12))


def default_targets(env_id: str, dataset_returns: np.ndarray, count: int = 10) -> list[float]:
    """Key-to-Door: 0, 0.25, ..., 1 (success rates). Else `count` evenly spaced targets from 0
    to above the dataset's best episode (the last one is >= 1.2 x the best return), on a round
    step: hopper medium-replay (best ~3200) gets 0, 500, ..., 4500, like the paper's 0..4000."""
    if is_key_to_door(env_id):
        return list(KEY_TO_DOOR_TARGETS)
    best = float(np.max(dataset_returns))
    if best <= 0:
        raise ValueError(f"the dataset's best episode return is {best:g}: pass --targets")
    step = nice_step(1.2 * best / (count - 1))
    return [round(i * step, 10) for i in range(count)]


def resolve_run(path: Path, allow_unfinished: bool) -> tuple[Path, int | None]:
    """(what to give evaluate_checkpoint, the final step a run folder's summary.json states)."""
    if path.is_file():
        return path, None
    summary = path / "summary.json"
    if not summary.is_file():
        if allow_unfinished:
            return path, None
        raise SystemExit(f"{path}: no summary.json, the run has not finished (a run folder is "
                         f"evaluated at its final checkpoint; --allow-unfinished takes its newest)")
    s = json.loads(summary.read_text())
    if s.get("status") != "finished" and not allow_unfinished:
        raise SystemExit(f"{summary}: status '{s.get('status')}', not 'finished'")
    return path, int(s["step"])


def dataset_returns_of(checkpoint: str) -> tuple[str, np.ndarray]:
    """(dataset source, per-episode returns) of the data the checkpoint was trained on."""
    from offrl.checkpoint import load_checkpoint
    from offrl.datasets import load_dataset

    payload = load_checkpoint(checkpoint)
    source = payload["run_config"]["dataset"]
    ds = load_dataset(source, env_id=payload.get("env_id"))
    return source, np.asarray(ds.episode_returns, dtype=np.float64)


def sample_stats(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (`seed_stats`, the compare report's; std 0 for a single run)."""
    from offrl.compare_report import seed_stats

    s = seed_stats(values)
    return s["mean"], s["std"] if s["std"] is not None else 0.0


def aggregate(runs: list[dict[str, Any]], targets: list[float]) -> list[dict[str, Any]]:
    """Per target: mean and sample std over runs of each run's episode means."""
    rows = []
    for i, target in enumerate(targets):
        per = [r["targets"][i] for r in runs]
        row: dict[str, Any] = {"target": target}
        for key in ("achieved", "return_mean", "normalized_score", "success_rate"):
            vals = [p[key] for p in per if p.get(key) is not None]
            if len(vals) == len(per):
                row[f"{key}_mean"], row[f"{key}_std"] = sample_stats(vals)
                row[f"{key}_per_seed"] = vals
        rows.append(row)
    return rows


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, data = report["summary"], report["dataset"]
    success = report["achieved"] == "success_rate"
    tgt = np.array([r["target"] for r in rows])
    mean = np.array([r["achieved_mean"] for r in rows])
    std = np.array([r["achieved_std"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    # Dataset returns as a horizontal histogram behind the curves, on a twin x axis whose
    # bars fill at most ~35% of the width. Few distinct returns (Key-to-Door: 0 or 1) get one
    # thin bar per value, labelled with its count, instead of bins that would smear them.
    hx = ax.twiny()
    hist = data["histogram"]
    counts = np.asarray(hist["counts"], dtype=float)
    if "values" in hist:
        values = np.asarray(hist["values"], dtype=float)
        span = max(float(np.ptp(values)), float(np.max(tgt)) - float(np.min(tgt)), 1e-9)
        hx.barh(values, counts, height=0.03 * span, color="0.8", edgecolor="0.6", lw=0.5,
                zorder=0)
        for v, c in zip(values, counts, strict=True):
            hx.annotate(f"{int(c)} episodes", (c, v), xytext=(3, 3), textcoords="offset points",
                        fontsize=7, color="0.4")
    else:
        edges = np.asarray(hist["edges"])
        hx.barh(edges[:-1], counts, height=np.diff(edges), align="edge", color="0.85",
                edgecolor="0.7", lw=0.5, zorder=0)
    hx.set_xlim(0, max(counts.max(), 1) / 0.35)
    hx.set_xlabel("dataset episodes (histogram of their returns)", fontsize=8, color="0.4")
    hx.tick_params(axis="x", labelsize=7, colors="0.4")
    ax.set_zorder(hx.get_zorder() + 1)
    ax.patch.set_visible(False)
    n = len(report["runs"])
    for i, r in enumerate(report["runs"]):
        ax.plot(tgt, [t["achieved"] for t in r["targets"]], color="C0", lw=0.6, alpha=0.35,
                label="single seeds" if i == 0 and n > 1 else None)
    ax.plot(tgt, mean, "o-", color="C0", label=f"DT, mean over {n} seed(s)")
    if n > 1:
        band_lo, band_hi = mean - std, mean + std
        if success:  # a rate lies in [0, 1]; the band would suggest otherwise
            band_lo, band_hi = np.clip(band_lo, 0, 1), np.clip(band_hi, 0, 1)
        ax.fill_between(tgt, band_lo, band_hi, color="C0", alpha=0.25,
                        label="± std over seeds")
    lo = min(0.0, float(tgt.min()))
    hi = max(float(tgt.max()), data["return_max"])
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.9, label="achieved = target")
    ax.axhline(data["return_max"], color="C3", ls=":", lw=1.2,
               label=f"best dataset episode ({data['return_max']:.4g})")
    ax.axhline(data["return_mean"], color="C2", ls=":", lw=1.2,
               label=f"dataset mean ({data['return_mean']:.4g})")
    unit = "success rate" if success else "return (raw)"
    ax.set_xlabel(f"target {'return (= success)' if success else 'return (raw)'}")
    ax.set_ylabel(f"achieved {unit}")
    ref = report.get("ref_scores")
    if ref and not success:
        lo_ref, hi_ref = ref
        sec = ax.secondary_yaxis(
            "right", functions=(lambda y: 100 * (y - lo_ref) / (hi_ref - lo_ref),
                                lambda s: lo_ref + s * (hi_ref - lo_ref) / 100))
        sec.set_ylabel("D4RL-normalized score", fontsize=9)
    ep = report["protocol"]["episodes"]
    ax.set_title(f"{report['title']}\n{ep} episodes per target and seed, same env seeds",
                 fontsize=9)
    # Below the axes: inside, it would hide the histogram or the curve depending on the env.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def evaluate_run(path: Path, final_step: int | None, protocol: dict[str, Any],
                 env_id: str) -> dict[str, Any]:
    """One run at every target (offrl's evaluator; the same episode seeds for each)."""
    from offrl.evaluator import evaluate_checkpoint

    t0 = time.perf_counter()
    results, meta = evaluate_checkpoint(
        path, num_episodes=protocol["episodes"], target_returns=protocol["targets"],
        num_envs=protocol["num_envs"], seed=protocol["eval_seed"],
        config_overrides={"kv_cache": protocol["kv_cache"]})
    if meta["algo"] != "dt":
        raise SystemExit(f"{path}: algo '{meta['algo']}' is not return-conditioned (DT only)")
    if final_step is not None and meta["step"] != final_step:
        raise SystemExit(f"{path}: newest checkpoint is step {meta['step']}, the run "
                         f"finished at step {final_step}: the final checkpoint is missing")
    if meta["env_id"] != env_id:
        raise SystemExit(f"{path}: env {meta['env_id']} differs from the first run's "
                         f"{env_id}; one study per env")
    wall = time.perf_counter() - t0
    per_target = []
    for res in results:
        s = res.summary()
        per_target.append({
            "target": res.target_return, "achieved": s.get("success_rate", s["return_mean"]),
            "return_mean": s["return_mean"], "return_std": s["return_std"],
            "normalized_score": s.get("normalized_score"),
            "success_rate": s.get("success_rate"), "length_mean": s["length_mean"],
            "returns": res.returns.tolist(), "lengths": res.lengths.tolist(),
            "successes": (res.successes.astype(int).tolist()
                          if res.successes is not None else None)})
    seeds = results[0].seeds.tolist()
    if any(r.seeds.tolist() != seeds for r in results):
        raise RuntimeError("the evaluator replayed different episode seeds per target")
    ckpt = Path(meta["checkpoint"])
    cfg = ckpt.parent.parent / "config.yaml"
    run_seed = None
    if cfg.is_file():
        import yaml

        run_seed = yaml.safe_load(cfg.read_text()).get("seed")
    return {"run": str(path), "checkpoint": str(ckpt), "step": meta["step"],
            "final": final_step is not None, "train_seed": run_seed,
            "episode_seeds": seeds, "eval_wall_s": wall, "targets": per_target}


def cached_run(cache_dir: Path, path: Path, final_step: int | None, protocol: dict[str, Any],
               env_id: str, fresh: bool = False) -> dict[str, Any]:
    """`evaluate_run`, kept in `cache_dir` and reused while the checkpoint file and the
    protocol are unchanged (so adding a seed later re-evaluates only that seed)."""
    import hashlib

    from offrl.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    key = {"checkpoint": str(ckpt.resolve()), "mtime_ns": ckpt.stat().st_mtime_ns,
           "final_step": final_step, **protocol}
    name = "".join(c if c.isalnum() or c in "-." else "_" for c in str(path.resolve()))
    digest = hashlib.sha1(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:10]
    cache = cache_dir / f"{name[-150:]}-{digest}.json"
    if cache.is_file() and not fresh:
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return {**stored["run"], "cached": True}
    run = evaluate_run(path, final_step, protocol, env_id)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    tmp.write_text(json.dumps({"key": key, "run": run}) + "\n")
    tmp.replace(cache)
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished DT run folders or checkpoints")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--targets", type=float, nargs="+", default=None,
                   help="target returns (default: 0..1 by 0.25 on Key-to-Door; else 10 round "
                   "steps from 0 to >= 1.2 x the dataset's best return)")
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes per target and run (default: 100 Key-to-Door, else 10)")
    p.add_argument("--num-envs", type=int, default=None,
                   help="vector envs (default: the run's num_eval_envs, at most --episodes)")
    p.add_argument("--eval-seed", type=int, default=1_000_000,
                   help="episode j resets with seed eval_seed + j, for every target and run "
                   "(offrl compare's default protocol)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--kv-cache", action="store_true",
                   help="act with DT's key/value cache (an approximation once an episode "
                   "outgrows the context); off: the exact full-window forward")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="accept run folders without a finished summary.json (newest checkpoint)")
    p.add_argument("--title", default=None, help="plot title (default: the dataset name)")
    p.add_argument("--cache", type=Path,
                   default=ROOT / "runs" / "return-conditioning-cache",
                   help="per-run results, reused for an unchanged checkpoint under the same "
                   "protocol")
    p.add_argument("--fresh", action="store_true", help="re-evaluate every run (ignore --cache)")
    args = p.parse_args(argv)

    import torch

    from offrl.checkpoint import load_checkpoint, resolve_checkpoint

    torch.set_num_threads(args.threads)
    if args.episodes is not None and args.episodes < 1:
        raise SystemExit(f"--episodes must be >= 1, got {args.episodes}")
    resolved = [resolve_run(path, args.allow_unfinished) for path in args.runs]
    # The first run fixes the env, the dataset, the grid and the episode count for all.
    first = load_checkpoint(resolve_checkpoint(resolved[0][0]))
    env_id = str(first.get("env_id") or "")
    source, dataset_returns = dataset_returns_of(str(resolve_checkpoint(resolved[0][0])))
    targets = list(args.targets) if args.targets else default_targets(env_id, dataset_returns)
    episodes = args.episodes or (100 if is_key_to_door(env_id) else 10)
    num_envs = min(args.num_envs or first["run_config"]["num_eval_envs"], episodes)
    ref = first.get("ref_scores")
    del first
    t_start = time.perf_counter()
    protocol = {"targets": targets, "episodes": episodes, "num_envs": num_envs,
                "eval_seed": args.eval_seed, "kv_cache": bool(args.kv_cache)}
    runs = []
    for path, final_step in resolved:
        run = cached_run(args.cache, path, final_step, protocol, env_id, fresh=args.fresh)
        runs.append(run)
        print(f"{path}: step {run['step']}, " + ", ".join(
            f"{t['target']:g}->{t['achieved']:.3g}" for t in run["targets"])
            + f" ({run['eval_wall_s']:.0f} s{', cached' if run.get('cached') else ''})",
            flush=True)

    success = all(t["success_rate"] is not None for r in runs for t in r["targets"])
    values, value_counts = np.unique(dataset_returns, return_counts=True)
    if len(values) <= 10:  # discrete returns: one count per value
        histogram = {"values": values.tolist(), "counts": value_counts.tolist()}
    else:
        counts, edges = np.histogram(dataset_returns, bins=40)
        histogram = {"counts": counts.tolist(), "edges": edges.tolist()}
    import gymnasium
    import matplotlib

    import offrl

    command = shlex.join([".venv/bin/python", "experiments/return_conditioning.py",
                          *(sys.argv[1:] if argv is None else argv)])
    dataset_name = Path(str(source)).name if str(source).startswith("/") else str(source)
    report = {
        "format": "offrl-return-conditioning/1",
        "title": args.title or dataset_name,
        "env_id": env_id,
        "achieved": "success_rate" if success else "return_mean",
        "units": ("success rate (Key-to-Door's return is 1 on success, else 0)" if success
                  else "raw undiscounted return; normalized_score = D4RL-style 100 * (R - "
                  "random) / (expert - random) with ref_scores"),
        "ref_scores": list(ref) if ref else None,
        "targets": targets,
        "protocol": {"episodes": episodes, "num_envs": num_envs, "eval_seed": args.eval_seed,
                     "threads": args.threads, "kv_cache": args.kv_cache,
                     "checkpoint": "final (newest ckpt_<step>.pt of each run; not best.pt)",
                     "stats": "per run: mean over episodes; then mean and sample std (n-1) "
                              "over runs"},
        "dataset": {"source": source, "episodes": int(dataset_returns.size),
                    "return_mean": float(dataset_returns.mean()),
                    "return_std": float(dataset_returns.std()),
                    "return_min": float(dataset_returns.min()),
                    "return_max": float(dataset_returns.max()),
                    "return_quantiles": {str(q): float(np.quantile(dataset_returns, q))
                                         for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
                    "histogram": histogram},
        "summary": aggregate(runs, targets),
        "runs": runs,
        "wall_time_s": time.perf_counter() - t_start,  # this invocation (cached runs: ~0)
        "eval_wall_s_total": sum(r["eval_wall_s"] for r in runs),
        "commands": [command],
        "versions": {"offrl": getattr(offrl, "__version__", None), "torch": torch.__version__,
                     "numpy": np.__version__, "gymnasium": gymnasium.__version__,
                     "matplotlib": matplotlib.__version__,
                     "python": platform.python_version(),
                     "machine": f"{platform.machine()}, {os.cpu_count()} cpus"},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "return_conditioning.json"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    png = plot(report, args.out / "return_conditioning.png")
    print(f"wrote {out} and {png}")
    for row in report["summary"]:
        extra = (f"  normalized {row['normalized_score_mean']:.1f} ± "
                 f"{row['normalized_score_std']:.1f}" if "normalized_score_mean" in row else "")
        print(f"  target {row['target']:>8g}: achieved {row['achieved_mean']:.3f} ± "
              f"{row['achieved_std']:.3f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
