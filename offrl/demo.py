"""`make demo` (`python -m offrl.demo`): offline RL end to end on Key-to-Door, offline, ~10 min
on 2 CPU cores.

1. Record a random-walk dataset of offrl/KeyToDoor-v0 (`offrl collect keytodoor`); the
   uniform random policy succeeds in ~3% of episodes.
2. Train DT, CQL, BC and %BC on it with `offrl train`, one subprocess per algorithm, using
   the YAML configs experiments/configs/demo-keytodoor-*.yaml (two at a time on 2 cores).
3. Evaluate every final checkpoint with the vectorized evaluator on fresh episode seeds
   (DT at target return 1 and at 0, to show the return conditioning).
4. Print a comparison table and write report.md and results.json next to the runs'
   TensorBoard logs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs"
ALGOS = ("dt", "cql", "pbc", "bc")  # start order: the longest run first
LABELS = {"dt": "DT", "cql": "CQL", "bc": "BC", "pbc": "%BC"}


@dataclass
class Job:
    algo: str
    config: Path
    run_dir: Path
    log: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    wall_s: float = 0.0
    returncode: int | None = None


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m offrl.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: runs/demo-<time>)")
    p.add_argument("--episodes", type=int, default=5000,
                   help="random-walk episodes to record (default 5000, ~390k steps)")
    p.add_argument("--jobs", type=int, default=None,
                   help="trainings run at once (default: 2, or 1 on a 1-core machine)")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="episodes per final evaluation (default 500; 20 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    p.add_argument("--quick", action="store_true",
                   help="a 1-minute wiring check: tiny data, a few steps (no learning)")
    return p.parse_args(argv)


def _last_row(path: Path, key: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    for line in reversed(path.read_text(encoding="utf-8").splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if key in row:
            return row
    return None


def _status(jobs: list[Job], total_steps: dict[str, int]) -> str:
    parts = []
    for job in jobs:
        if job.proc is None or job.returncode is not None:
            continue  # not started, or finished (announced when it finished)
        row = _last_row(job.run_dir / "metrics.jsonl", "time/updates_per_s")
        ev = _last_row(job.run_dir / "metrics.jsonl", "eval/success_rate")
        step = row["step"] if row else 0
        text = f"{LABELS[job.algo]} {step}/{total_steps[job.algo]}"
        if ev is not None:
            text += f" (success {ev['eval/success_rate']:.2f} at step {ev['step']})"
        parts.append(text)
    return " | ".join(parts)


def _train_all(jobs: list[Job], dataset: Path, threads: int, parallel: int,
               extra: list[str], total_steps: dict[str, int]) -> None:
    pending, running = list(jobs), []
    t0, last_print = time.time(), 0.0
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            cmd = [sys.executable, "-m", "offrl.cli", "train", "--config", str(job.config),
                   "--dataset", str(dataset), "--run-dir", str(job.run_dir),
                   "--num-threads", str(threads), "--no-progress", *extra]
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "w") as log:
                job.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            job.started = time.time()
            running.append(job)
        time.sleep(1.0)
        for job in list(running):
            code = job.proc.poll() if job.proc else None
            if code is not None:
                job.returncode, job.wall_s = code, time.time() - job.started
                running.remove(job)
                ev = _last_row(job.run_dir / "metrics.jsonl", "eval/success_rate")
                score = f", success {ev['eval/success_rate']:.2f}" if ev and code == 0 else ""
                print(f"  {LABELS[job.algo]} finished in {job.wall_s:.0f} s{score}"
                      + ("" if code == 0 else f" with exit code {code}; see {job.log}"))
        if time.time() - last_print >= 30 and running:
            last_print = time.time()
            print(f"  [{time.time() - t0:4.0f} s] {_status(jobs, total_steps)}", flush=True)


def _wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a success rate (sensible at 0 and 1, unlike p +- 2 se)."""
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _fmt_row(cells: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [_fmt_row(header, widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(lines + [_fmt_row(r, widths) for r in rows])


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    t_start = time.time()
    cores = os.cpu_count() or 1
    parallel = args.jobs or min(2, cores)
    threads = max(1, cores // parallel)
    out = (args.out or Path("runs") / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    out = out.resolve()
    episodes = 300 if args.quick else args.episodes
    eval_episodes = args.eval_episodes or (20 if args.quick else 500)
    print(f"offrl demo -> {out}\n  {cores} CPU cores: {parallel} trainings at a time, "
          f"{threads} torch thread(s) each")

    # 1. Data ---------------------------------------------------------------------------------
    from offrl.datasets import load_dataset
    from offrl.datasets.collect import collect_dataset

    t0 = time.time()
    print(f"1/4 recording {episodes} random-walk episodes of Key-to-Door ...")
    path, _ = collect_dataset(f"keytodoor/random-{episodes}-v0", "offrl/KeyToDoor-v0", "random",
                              episodes, seed=args.seed, root=out / "data", progress=False,
                              algorithm_name="uniform random walk")
    data = load_dataset(path)
    data_success = float((data.episode_returns > 0).mean())
    data_s = time.time() - t0
    print(f"    {data.num_episodes} episodes, {data.num_steps} steps, success rate "
          f"{data_success:.3f} ({data_s:.0f} s) -> {path}")

    # 2. Training -------------------------------------------------------------------------------
    from offrl.config import load_yaml

    jobs, total_steps = [], {}
    for algo in [a for a in ALGOS if a in args.algos]:
        config = CONFIGS / f"demo-keytodoor-{algo}.yaml"
        if not config.is_file():
            print(f"error: {config} not found (run the demo from the offrl repository)",
                  file=sys.stderr)
            return 1
        cfg = load_yaml(config)
        total_steps[algo] = 20 if args.quick else cfg.total_steps
        jobs.append(Job(algo, config, out / "runs" / algo, out / "logs" / f"{algo}.log"))
    extra = (["--steps", "20", "--log-every", "10", "--eval-every", "0",
              "--num-eval-episodes", "5", "--num-eval-envs", "5"] if args.quick else [])
    extra += ["--seed", str(args.seed)]
    print(f"2/4 training {', '.join(LABELS[j.algo] for j in jobs)} "
          f"(configs: {CONFIGS.relative_to(REPO)}/demo-keytodoor-*.yaml)")
    t0 = time.time()
    _train_all(jobs, path, threads, parallel, extra, total_steps)
    train_s = time.time() - t0
    failed = [j for j in jobs if j.returncode != 0]
    if failed:
        for job in failed:
            print(f"error: {LABELS[job.algo]} failed; log: {job.log}", file=sys.stderr)
            print(job.log.read_text()[-2000:], file=sys.stderr)
        return 1

    # 3. Final evaluation ---------------------------------------------------------------------
    import torch

    from offrl.evaluator import evaluate_checkpoint

    # Small policies: one thread is fastest and does not fight other processes for cores.
    torch.set_num_threads(1)
    print(f"3/4 evaluating the final and the best checkpoints on {eval_episodes} fresh "
          f"episodes each ...")
    t0 = time.time()
    eval_seed = 2_000_000 + 1000 * args.seed  # unseen by training-time evaluations
    rows, results = [], []
    ref = None
    for job in jobs:
        summary = json.loads((job.run_dir / "summary.json").read_text())
        targets = (1.0, 0.0) if job.algo == "dt" else None
        best_path = job.run_dir / "checkpoints" / "best.pt"
        final, _ = evaluate_checkpoint(job.run_dir, num_episodes=eval_episodes,
                                       target_returns=targets, num_envs=50, seed=eval_seed)
        best, best_meta = evaluate_checkpoint(best_path, num_episodes=eval_episodes,
                                              target_returns=targets, num_envs=50,
                                              seed=eval_seed)
        for res, res_best in zip(final, best, strict=True):
            s, sb = res.summary(), res_best.summary()
            n = len(res.returns)
            lo, hi = _wilson(s["success_rate"], n)
            label = LABELS[job.algo]
            if res.target_return is not None:
                label += f" (target {res.target_return:g})"
            results.append({
                "algo": job.algo, "label": label, "target_return": res.target_return,
                "episodes": n, **s, "success_ci95": [lo, hi], "steps": summary["step"],
                "best_checkpoint": {"step": best_meta["step"], **sb},
                "train_time_s": summary["train_time_s"], "wall_time_s": job.wall_s,
                "updates_per_s": summary["updates_per_s"], "run_dir": str(job.run_dir)})
            rows.append([label, f"{s['success_rate']:.3f}", f"[{lo:.2f}, {hi:.2f}]",
                         f"{s['normalized_score']:.1f}",
                         f"{sb['success_rate']:.3f} @ {best_meta['step']}",
                         str(summary["step"]), f"{job.wall_s:.0f}",
                         f"{summary['updates_per_s']:.0f}"])
        ref = final[0].ref_scores
    eval_s = time.time() - t0
    lo_ref = ref[0] if ref else 0.0
    rows.append(["random walk (the data)", f"{data_success:.3f}", "-",
                 f"{100 * (data_success - lo_ref) / (1 - lo_ref):.1f}", "-", "-", "-", "-"])
    header = ["policy", "success (final)", "95% CI", "normalized score",
              "success (best ckpt) @ step", "steps", "wall s", "updates/s"]
    table = _table(header, rows)

    # 4. Report -------------------------------------------------------------------------------
    total_s = time.time() - t_start
    print("4/4 results\n")
    print(table)
    report = out / "report.md"
    report.write_text(_report(table, data, data_success, path, jobs, eval_episodes, eval_seed,
                              data_s, train_s, eval_s, total_s, cores, parallel, threads,
                              args.quick), encoding="utf-8")
    (out / "results.json").write_text(json.dumps({
        "dataset": str(path), "data_success_rate": data_success, "results": results,
        "time_s": {"data": data_s, "train": train_s, "eval": eval_s, "total": total_s},
        "cpu_cores": cores, "parallel_jobs": parallel, "threads_per_job": threads,
        "quick": args.quick}, indent=1) + "\n", encoding="utf-8")
    print(f"\ntotal {total_s / 60:.1f} min (data {data_s:.0f} s, training {train_s:.0f} s, "
          f"evaluation {eval_s:.0f} s)")
    print(f"report:      {report}")
    print(f"TensorBoard: tensorboard --logdir {out / 'runs'}")
    print(f"checkpoints: {out / 'runs'}/<algo>/checkpoints/ "
          f"(try: offrl eval {out / 'runs' / 'dt'} --target-return 1 0)")
    return 0


def _curve(metrics: Path) -> str:
    from offrl.logging import read_jsonl

    rows = [r for r in read_jsonl(metrics) if "eval/success_rate" in r]
    return ", ".join(f"{r['step']}: {r['eval/success_rate']:.2f}" for r in rows) or "-"


def _report(table: str, data: Any, data_success: float, path: Path, jobs: list[Job],
            eval_episodes: int, eval_seed: int, data_s: float, train_s: float, eval_s: float,
            total_s: float, cores: int, parallel: int, threads: int, quick: bool) -> str:
    configs = "\n".join(f"- {LABELS[j.algo]}: `{j.config.relative_to(REPO)}` -> `{j.run_dir}`"
                        for j in jobs)
    curves = "\n".join(f"- {LABELS[j.algo]}: {_curve(j.run_dir / 'metrics.jsonl')}"
                       for j in jobs)
    warn = ("\n> **--quick run**: a few gradient steps to check the wiring; the numbers say "
            "nothing about the algorithms.\n" if quick else "")
    return f"""# offrl demo: offline RL on Key-to-Door
{warn}
Dataset: {data.num_episodes} uniform random-walk episodes ({data.num_steps} steps) of
`offrl/KeyToDoor-v0`, recorded with `offrl collect keytodoor` at `{path}`.
The random walk succeeds in {100 * data_success:.1f}% of them: picking up the key in the first
room and reaching the door in the third, 40 reward-free steps later.

Each algorithm trained once (seed as given) from these episodes only, never touching the
env except for periodic evaluations. Then its final checkpoint, and the checkpoint that
scored best in those periodic evaluations (best.pt), each played {eval_episodes} fresh
episodes (env seeds from {eval_seed}, unseen during training), 50 envs in lockstep. DT was
asked for return 1 (success) and for return 0.

{table}

- success = mean return (the env pays 1 for reaching the door with the key, else 0);
  95% CI: Wilson interval over the evaluation episodes. "best ckpt" picks a checkpoint with
  online evaluations, which a purely offline setting cannot do: read it as what the run
  reached, and the final column as what it delivers.
- normalized score: 100 x (R - R_random) / (R_expert - R_random) with the env facts'
  references (random 0.0304, expert 1.0); 0 is the random walk, 100 always succeeds.
- wall s: the training subprocess (data loading, training, periodic evaluations,
  checkpoints); updates/s: gradient steps per second of pure training.
- %BC imitates the top fraction of episodes by return set in its config: a fraction below
  the data's success rate keeps successful episodes only.

Success rate at the training-time evaluations (fewer episodes, other seeds), by step:
{curves}

Configs and runs:
{configs}

Learning curves: `tensorboard --logdir {jobs[0].run_dir.parent}` (train/*, eval/*, time/*
against the gradient step); the same numbers are in each run's metrics.jsonl and summary.json.

Time: {total_s / 60:.1f} min in all on {cores} CPU cores ({parallel} trainings at a time,
{threads} torch thread(s) each): data {data_s:.0f} s, training {train_s:.0f} s, final
evaluation {eval_s:.0f} s.
"""


if __name__ == "__main__":
    raise SystemExit(main())
