"""The offrl side of the peer check: the study's finished runs (read only), else runs of the
suite's exact `offrl train` command into --work (with an optional precision override)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from experiments.peer.algos import PeerAlgo
from experiments.peer.d3rlpy_side import run_logged


def offrl_command(algo: PeerAlgo, level: str, seed: int, run_dir: Path, args: Any,
                  precision: str | None = None) -> list[str]:
    """The MuJoCo suites' `offrl train` command (offrl compare's plan, same flags); with
    `precision`, that override appended."""
    cmd = [sys.executable, "-m", "offrl.cli", "train", "--algo", algo.name,
           "--config", str(algo.offrl_config),
           "--dataset", f"minari:offrl-mujoco/{args.env}/{level}-v0", "--env", args.env_id,
           "--seed", str(seed), "--steps", str(args.steps), "--eval-every", "1000",
           "--num-eval-episodes", str(args.episodes), "--num-eval-envs", str(args.envs),
           "--eval-seed", str(args.eval_seed), "--run-dir", str(run_dir),
           "--num-threads", str(args.threads), "--no-progress"]
    if precision is not None:
        cmd += ["--precision", precision]
    return cmd


def run_precision(run_dir: Path) -> str | None:
    """The `precision` an offrl run folder trained with (its config.yaml), None if unknown."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    return (yaml.safe_load(path.read_text()) or {}).get("precision")


def read_offrl_run(summary: Path, source: str, algo: PeerAlgo) -> dict[str, Any] | None:
    """One finished offrl run as a report row; None while it is not finished."""
    try:
        s = json.loads(summary.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{summary}: unreadable offrl summary ({e})") from e
    if s.get("status") != "finished":
        return None
    metrics_path = summary.parent / "metrics.jsonl"
    if not metrics_path.is_file():
        raise SystemExit(f"{metrics_path} is missing beside a finished summary.json")
    metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    final = s.get("final_eval") or {}
    return {"seed": s["seed"], "step": s["step"], "run_dir": str(summary.parent),
            **algo.offrl_diag(metrics, s["step"]),
            "source": source, "return_mean": final.get("eval/return_mean"),
            "normalized_score": final.get("eval/normalized_score"),
            "best_score": s.get("best_score"), "wall_time_s": s.get("wall_time_s"),
            "train_time_s": s.get("train_time_s"),
            "updates_per_s": s.get("updates_per_s"),
            **per_target(final, s.get("eval_targets"))}


def per_target(final: dict[str, Any], targets: list | None) -> dict[str, Any]:
    """DT runs: the final normalized score at each target return (the headline is the first)."""
    if not targets or targets == [None]:
        return {}
    return {"normalized_score_by_target": {
        f"{t:g}": final.get(f"eval/{t:g}/normalized_score") for t in targets}}


def own_run_dir(algo: PeerAlgo, name: str, seed: int, work: Path,
                precision: str | None) -> Path:
    """Where the peer check trains offrl itself (BC: the original folder names)."""
    tag = f"-{precision}" if precision is not None else ""
    return work / name / f"offrl-{algo.name}{tag}-seed{seed}"


def offrl_side(algo: PeerAlgo, level: str, args: Any, precision: str | None = None
               ) -> list[dict[str, Any]]:
    """offrl `algo` per seed: the study's finished run (read only) where it exists and
    trained at the requested precision, else (with --offrl-train) a run of the suite's exact
    command (plus `--precision` when overridden) in the peer-check folder. `precision` None:
    the config's own (what the study ran)."""
    name = f"{args.env}-{level}"
    study_dir = args.compare / name
    if not study_dir.is_dir() and not args.offrl_train:
        raise SystemExit(f"{study_dir}: no such study folder (pass --compare DIR, or "
                         f"--offrl-train to train offrl into --work)")
    rows = []
    for seed in range(args.seeds):
        study = study_dir / "runs" / algo.name / f"seed{seed}"
        row = None
        if (study / "summary.json").is_file() and (
                precision is None or run_precision(study) == precision):
            row = read_offrl_run(study / "summary.json", f"{args.env} study", algo)
        if row is None:
            own = own_run_dir(algo, name, seed, args.work, precision)
            cmd = offrl_command(algo, level, seed, own, args, precision)
            if not (own / "summary.json").is_file() and args.offrl_train:
                own.parent.mkdir(parents=True, exist_ok=True)
                print(f"training offrl {algo.label} {name} seed {seed} ...", flush=True)
                run_logged(cmd, own.parent / f"{own.name}.log")
            if (own / "summary.json").is_file():
                row = read_offrl_run(own / "summary.json",
                                     "peer_check.py (the suite's command)", algo)
                if row is not None:
                    row["command"] = shlex.join(cmd)
        if row is None:
            print(f"  offrl {algo.label} {name} seed {seed}: no finished run yet "
                  f"({study}; --offrl-train trains it)", flush=True)
            continue
        if row["step"] != args.steps:
            raise SystemExit(f"{row['run_dir']}: {row['step']} steps, expected {args.steps}")
        rows.append(row)
    return rows


def offrl_act(run_dir: Path) -> Any:
    """Greedy actions of an offrl run's final checkpoint: (n, obs_dim) -> (n, A)."""
    from offrl.checkpoint import load_checkpoint, resolve_checkpoint, restore_algorithm

    ckpt = resolve_checkpoint(run_dir)
    algo = restore_algorithm(load_checkpoint(ckpt), "cpu", ckpt)

    def act(o: np.ndarray) -> np.ndarray:
        policy = algo.make_policy(len(o))  # stateless: one per chunk size
        policy.reset(np.ones(len(o), dtype=bool), None)
        return policy.act(o, np.zeros(len(o), dtype=np.float32))

    return act


def long_eval_offrl(run_dir: Path, episodes: int, args: Any) -> float:
    """Normalized score of an offrl run's final checkpoint over `episodes` episodes (seeds
    eval_seed + j, a superset of the run's own 10), cached under --work (the study's run
    folders are read only)."""
    from offrl.checkpoint import resolve_checkpoint
    from offrl.evaluator import evaluate_checkpoint

    ckpt = resolve_checkpoint(run_dir)
    key = {"checkpoint": str(ckpt.resolve()), "mtime_ns": ckpt.stat().st_mtime_ns,
           "episodes": episodes, "num_envs": args.envs, "eval_seed": args.eval_seed}
    name = "".join(c if c.isalnum() or c in "-." else "_" for c in str(run_dir.resolve()))
    cache = args.work / "long_eval" / f"{name[-150:]}-{episodes}.json"
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored["key"] == key:
            return stored["normalized_score"]
    results, _ = evaluate_checkpoint(run_dir, num_episodes=episodes, num_envs=args.envs,
                                     seed=args.eval_seed)
    res = results[0]  # DT: the first of the run's targets, as its headline score
    score = res.summary()["normalized_score"]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "normalized_score": score,
                                 "returns": res.returns.tolist()}) + "\n")
    return score
