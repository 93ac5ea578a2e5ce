"""Peer check: d3rlpy 2.8.1 BC vs offrl BC on the hopper datasets, one evaluation protocol.

For every dataset and seed: export the offrl dataset to a D4RL-layout HDF5 file
(`benchmarks/peers/export_d4rl.py`), train d3rlpy's BC for `--steps` gradient steps in the
d3rlpy venv (`benchmarks/peers/d3rlpy_train.py`, one process at a time, `--threads` torch
threads), then score its exported policy with offrl's `Evaluator` exactly as the hopper suite
scores offrl's runs (`experiments/suites/hopper-cpu.yaml` + `configs/mujoco-cpu-bc.yaml`:
10 episodes on 10 envs, episode j reset with seed 1,000,000 + j for every run, D4RL-style
normalized score with the dataset's reference scores). The offrl side is read from the
hopper study's run folders (`<compare>/<name>/runs/bc/seed<k>/summary.json`, read only).

For seeds the study has not finished, `--offrl-train` runs the suite's exact `offrl train`
command itself (into `--work`); such runs reproduce the study's bit for bit (checked: same
final returns on three seeds). Diagnostics beside the protocol's score: each final policy
over `--long-episodes` (50) episodes, the training loss over the second half of the run,
and the action MSE on a fixed 100k-step sample of the dataset.

Resumable: a d3rlpy run with `peer.json` is not trained again, one with `offrl_eval.json`
(from the same protocol) is not evaluated again, an existing export is reused, an offrl run
with a summary.json is not trained again.

    .venv/bin/python experiments/peer_check.py --offrl-train         # all three datasets
    .venv/bin/python experiments/peer_check.py --levels medium --seeds 5 --offrl-train \
        --out experiments/results/peer-check/hopper-medium-bc-5seeds.json

Writes `--out` (default experiments/results/peer-check/hopper-bc.json) and a markdown table
beside it (same name, .md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEVELS = ("medium", "medium-replay", "medium-expert")
STATS = ("normalized_score", "return_mean", "train_loss_second_half", "action_mse",
         "normalized_score_long")


def protocol_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"env_id": args.env_id, "episodes": args.episodes, "num_envs": args.envs,
            "eval_seed": args.eval_seed}


def last_epoch_loss(run_dir: Path) -> float | None:
    """d3rlpy's mean training loss over its last epoch (the run's second 10k steps)."""
    path = run_dir / "logs" / "fit" / "loss.csv"
    if not path.is_file():
        return None
    return float(path.read_text().split()[-1].split(",")[-1])


def run_logged(cmd: list[str], log: Path) -> float:
    """Run `cmd` from the repository root with its output in `log`; wall seconds."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n" + "\n".join(tail))
    return time.perf_counter() - t0


def export(source: str, path: Path, env_id: str) -> None:
    if path.is_file():
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks.peers.export_d4rl import export_d4rl
    from offrl.datasets import load_dataset

    export_d4rl(load_dataset(source, env_id=env_id), path)
    print(f"exported {source} -> {path}", flush=True)


def evaluate(run_dir: Path, source: str, protocol: dict[str, Any],
             name: str = "offrl_eval.json") -> dict[str, Any]:
    """Score d3rlpy's policy.pt with offrl's evaluator (cached in run_dir/name)."""
    out = run_dir / name
    if out.is_file():
        cached = json.loads(out.read_text())
        if cached.get("protocol") == protocol:
            return cached
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.peers.d3rlpy_policy import D3rlpyPolicy
    from offrl.datasets import load_dataset
    from offrl.envs import env_spaces
    from offrl.evaluator import Evaluator, reference_scores

    torch.set_num_threads(1)
    env_id = protocol["env_id"]
    # The reference scores offrl's trainer uses: the dataset's metadata, else the env table.
    ref = reference_scores(env_id, load_dataset(source, env_id=env_id).meta)
    _, act_space = env_spaces(env_id)
    n = min(protocol["num_envs"], protocol["episodes"])
    policy = D3rlpyPolicy(run_dir / "policy.pt", n, act_space.low, act_space.high)
    t0 = time.perf_counter()
    with Evaluator(env_id, n, ref_scores=ref) as ev:
        (res,) = ev.evaluate(policy, protocol["episodes"], seed=protocol["eval_seed"])
    result = {"protocol": protocol, "ref_scores": list(ref) if ref else None,
              "eval_s": time.perf_counter() - t0, **res.summary(),
              "returns": res.returns.tolist(), "lengths": res.lengths.tolist(),
              "normalized_scores": (res.normalized_scores.tolist()
                                    if res.normalized_scores is not None else None)}
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def action_mse_sample(source: str, env_id: str, size: int = 100_000
                      ) -> tuple[np.ndarray, np.ndarray]:
    """A fixed uniform sample (seed 0) of the dataset's (observation, action) steps, the same
    for both libraries: how closely each fitted the data it imitates."""
    from offrl.datasets import load_dataset

    ds = load_dataset(source, env_id=env_id)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(ds.num_steps, size=min(size, ds.num_steps), replace=False))
    return ds.step_observations[idx].astype(np.float32), ds.actions[idx].astype(np.float32)


def action_mse(act: Any, obs: np.ndarray, actions: np.ndarray, chunk: int = 10_000) -> float:
    """Mean over steps and action dims of (policy action - dataset action)^2, env units."""
    import torch

    err = 0.0
    with torch.no_grad():
        for lo in range(0, len(obs), chunk):
            pred = np.asarray(act(obs[lo:lo + chunk]), dtype=np.float64)
            err += float(((pred - actions[lo:lo + chunk]) ** 2).sum())
    return err / actions.size


def d3rlpy_act(run_dir: Path) -> Any:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(run_dir / "policy.pt"), map_location="cpu").eval()
    return lambda o: np.clip(module(torch.as_tensor(o)).numpy(), -1.0, 1.0)


def offrl_act(run_dir: Path) -> Any:
    from offrl.checkpoint import load_checkpoint, resolve_checkpoint, restore_algorithm

    ckpt = resolve_checkpoint(run_dir)
    algo = restore_algorithm(load_checkpoint(ckpt), "cpu", ckpt)

    def act(o: np.ndarray) -> np.ndarray:
        policy = algo.make_policy(len(o))  # stateless: one per chunk size
        policy.reset(np.ones(len(o), dtype=bool), None)
        return policy.act(o, np.zeros(len(o), dtype=np.float32))

    return act


def long_eval_offrl(run_dir: Path, episodes: int, args: argparse.Namespace) -> float:
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
    (res,), _ = evaluate_checkpoint(run_dir, num_episodes=episodes, num_envs=args.envs,
                                    seed=args.eval_seed)
    score = res.summary()["normalized_score"]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "normalized_score": score,
                                 "returns": res.returns.tolist()}) + "\n")
    return score


def offrl_command(level: str, seed: int, run_dir: Path, args: argparse.Namespace) -> list[str]:
    """The hopper suite's `offrl train` command for BC (offrl compare's plan, same flags)."""
    return [sys.executable, "-m", "offrl.cli", "train", "--algo", "bc",
            "--config", "experiments/configs/mujoco-cpu-bc.yaml",
            "--dataset", f"minari:offrl-mujoco/hopper/{level}-v0", "--env", args.env_id,
            "--seed", str(seed), "--steps", str(args.steps), "--eval-every", "1000",
            "--num-eval-episodes", str(args.episodes), "--num-eval-envs", str(args.envs),
            "--eval-seed", str(args.eval_seed), "--run-dir", str(run_dir),
            "--num-threads", str(args.threads), "--no-progress"]


def read_offrl_run(summary: Path, source: str) -> dict[str, Any] | None:
    s = json.loads(summary.read_text())
    if s.get("status") != "finished":
        return None
    final = s.get("final_eval") or {}
    losses = []
    for line in (summary.parent / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if "train/loss" in m and m["step"] > s["step"] // 2:
            losses.append(m["train/loss"])  # each a mean over the steps since the last log
    return {"seed": s["seed"], "step": s["step"], "run_dir": str(summary.parent),
            "train_loss_second_half": float(np.mean(losses)) if losses else None,
            "source": source, "return_mean": final.get("eval/return_mean"),
            "normalized_score": final.get("eval/normalized_score"),
            "best_score": s.get("best_score"), "wall_time_s": s.get("wall_time_s"),
            "train_time_s": s.get("train_time_s"),
            "updates_per_s": s.get("updates_per_s")}


def offrl_side(level: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """offrl BC per seed: the hopper study's finished run (read only) where it exists, else
    (with --offrl-train) a run of the suite's exact command in the peer-check folder."""
    name = f"hopper-{level}"
    rows = []
    for seed in range(args.seeds):
        study = args.compare / name / "runs" / "bc" / f"seed{seed}" / "summary.json"
        row = read_offrl_run(study, "hopper study") if study.is_file() else None
        if row is None:
            own = args.work / name / f"offrl-bc-seed{seed}"
            if not (own / "summary.json").is_file() and args.offrl_train:
                own.parent.mkdir(parents=True, exist_ok=True)
                print(f"training offrl BC {name} seed {seed} ...", flush=True)
                cmd = offrl_command(level, seed, own, args)
                run_logged(cmd, own.parent / f"offrl-bc-seed{seed}.log")
            if (own / "summary.json").is_file():
                row = read_offrl_run(own / "summary.json", "peer_check.py (the suite's command)")
                if row is not None:
                    row["command"] = shlex.join(offrl_command(level, seed, own, args))
        if row is not None:
            if row["step"] != args.steps:
                raise SystemExit(f"{row['run_dir']}: {row['step']} steps, expected {args.steps}")
            rows.append(row)
    return rows


def stats(values: list[float]) -> dict[str, float | int | None]:
    """`seed_stats` (the compare report's), with std 0 for a single run."""
    from offrl.compare_report import seed_stats

    s = seed_stats(values)
    std = s["std"] if s["n"] != 1 else 0.0
    return {"n": s["n"], "mean": s["mean"], "std": std}


def fmt(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "not run yet"
    return f"{s['mean']:.1f} ± {s['std']:.1f} (n={s['n']})"


def markdown(report: dict[str, Any]) -> str:
    p = report["protocol"]
    lines = [
        "# Peer check: d3rlpy BC vs offrl BC, hopper",
        "",
        f"Final D4RL-normalized score after {report['steps']} gradient steps, mean ± sample "
        f"std over seeds; both scored by offrl's evaluator: {p['episodes']} episodes on "
        f"{p['num_envs']} envs of {p['env_id']}, episode j reset with seed "
        f"{p['eval_seed']} + j for every run.",
        "",
        "| dataset | d3rlpy BC | offrl BC | d3rlpy raw return | offrl raw return |",
        "|---|---|---|---|---|",
    ]
    for d in report["datasets"]:
        lines.append(f"| {d['name']} | {fmt(d['d3rlpy']['normalized_score'])} | "
                     f"{fmt(d['offrl']['normalized_score'])} | "
                     f"{fmt(d['d3rlpy']['return_mean'])} | {fmt(d['offrl']['return_mean'])} |")
    lines += ["", f"The same final policies over {report['long_episodes']} episodes (env seeds "
              f"{p['eval_seed']} + j, j < {report['long_episodes']}; less evaluation noise):",
              "", "| dataset | d3rlpy BC | offrl BC |", "|---|---|---|"]
    for d in report["datasets"]:
        lines.append(f"| {d['name']} | {fmt(d['d3rlpy']['normalized_score_long'])} | "
                     f"{fmt(d['offrl']['normalized_score_long'])} |")
    lines += ["", "How closely each fitted the data (mean over seeds): training loss over the "
              "second half of the run (MSE in [-1, 1] action units; d3rlpy: its last epoch), "
              "and the action MSE of the final policy on a fixed 100k-step sample of the "
              "dataset (env units; hopper's are [-1, 1]):", "",
              "| dataset | d3rlpy loss | offrl loss | d3rlpy action MSE | offrl action MSE |",
              "|---|---|---|---|---|"]
    for d in report["datasets"]:
        cells = [d[side][k] for k in ("train_loss_second_half", "action_mse")
                 for side in ("d3rlpy", "offrl")]
        lines.append(f"| {d['name']} | " + " | ".join(
            f"{c['mean']:.4f} ± {c['std']:.4f}" if c["n"] else "-" for c in cells) + " |")
    lines += ["", "Per run (final normalized score; offrl runs come from the hopper study where "
              "it finished them, else from this script with the suite's exact command; train s: "
              "seconds of gradient steps, evaluations excluded, measured while the machine ran "
              "other jobs, so only roughly comparable):", "",
              "| dataset | seed | d3rlpy | d3rlpy train s | offrl | offrl train s | offrl run |",
              "|---|---|---|---|---|---|---|"]
    for d in report["datasets"]:
        d3 = {r["seed"]: r for r in d["d3rlpy"]["runs"]}
        off = {r["seed"]: r for r in d["offrl"]["runs"]}
        for seed in sorted(set(d3) | set(off)):
            a, o = d3.get(seed, {}), off.get(seed, {})
            cells = [f"{a['normalized_score']:.1f}" if a else "-",
                     f"{a['train_wall_s']:.0f}" if a else "-",
                     f"{o['normalized_score']:.1f}" if o else "-",
                     f"{o['train_time_s']:.0f}" if o.get("train_time_s") else "-",
                     o.get("source", "-")]
            lines.append(f"| {d['name']} | {seed} | " + " | ".join(cells) + " |")
    lines += ["", "Commands:", "", "```", *report["commands"], "```", "",
              f"Versions: {report['versions']}", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", nargs="+", default=list(LEVELS), choices=LEVELS)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--steps", type=int, default=20_000, help="d3rlpy gradient steps "
                   "(offrl's mujoco-cpu-bc.yaml: 20k)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of d3rlpy training")
    p.add_argument("--env-id", default="Hopper-v5")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--envs", type=int, default=10)
    p.add_argument("--eval-seed", type=int, default=1_000_000)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "peers" / "hopper",
                   help="exports and d3rlpy run folders")
    p.add_argument("--compare", type=Path, default=ROOT / "runs" / "compare" / "hopper",
                   help="the hopper study's offrl compare folder (read only)")
    p.add_argument("--out", type=Path,
                   default=ROOT / "experiments" / "results" / "peer-check" / "hopper-bc.json")
    p.add_argument("--d3rlpy-python", type=Path, default=ROOT / ".venv-d3rlpy" / "bin" / "python")
    p.add_argument("--long-episodes", type=int, default=50,
                   help="also score every final policy over this many episodes (seeds "
                   "eval_seed + j; less evaluation noise than the protocol's 10; 0: skip)")
    p.add_argument("--offrl-train", action="store_true",
                   help="train offrl BC (the suite's command) for seeds the study has not "
                   "finished, into --work")
    p.add_argument("--no-train", action="store_true",
                   help="only report what exists (no export, training or evaluation)")
    args = p.parse_args()
    if args.no_train:
        args.offrl_train = False
    if not args.no_train and not args.d3rlpy_python.is_file():
        raise SystemExit(f"{args.d3rlpy_python} not found: make venv-d3rlpy")
    protocol = protocol_of(args)
    commands = [shlex.join([".venv/bin/python", "experiments/peer_check.py", *sys.argv[1:]])]
    datasets = []
    for level in args.levels:
        name, source = f"hopper-{level}", f"minari:offrl-mujoco/hopper/{level}-v0"
        data = args.work / f"{name}.hdf5"
        runs = []
        for seed in range(args.seeds):
            run_dir = args.work / name / f"bc-seed{seed}"
            train_cmd = [str(args.d3rlpy_python), "benchmarks/peers/d3rlpy_train.py",
                         "--data", str(data), "--algo", "bc", "--steps", str(args.steps),
                         "--seed", str(seed), "--threads", str(args.threads),
                         "--out", str(run_dir)]
            peer = run_dir / "peer.json"
            if peer.is_file() and json.loads(peer.read_text())["steps"] != args.steps:
                raise SystemExit(f"{peer} has another step count: remove {run_dir} to retrain")
            if not peer.is_file():
                if args.no_train:
                    continue
                export(source, data, args.env_id)
                run_dir.mkdir(parents=True, exist_ok=True)
                print(f"training d3rlpy BC {name} seed {seed} ...", flush=True)
                run_logged(train_cmd, run_dir / "train.log")
            if args.no_train and not (run_dir / "offrl_eval.json").is_file():
                continue
            ev = evaluate(run_dir, source, protocol)
            meta = json.loads(peer.read_text())
            print(f"  {name} seed {seed}: normalized {ev['normalized_score']:.1f}, return "
                  f"{ev['return_mean']:.0f}, train {meta['wall_time_s']:.0f} s", flush=True)
            runs.append({"seed": seed, "run_dir": str(run_dir), "steps": meta["steps"],
                         "train_wall_s": meta["wall_time_s"], "command": shlex.join(train_cmd),
                         "return_mean": ev["return_mean"], "return_std": ev["return_std"],
                         "normalized_score": ev["normalized_score"],
                         "train_loss_second_half": last_epoch_loss(run_dir),
                         "returns": ev["returns"], "lengths": ev["lengths"],
                         "d3rlpy_config": meta["config"]})
        off = offrl_side(level, args)
        if runs or off:
            obs, acts = action_mse_sample(source, args.env_id)
            for r in runs:
                r["action_mse"] = action_mse(d3rlpy_act(Path(r["run_dir"])), obs, acts)
            for r in off:
                r["action_mse"] = action_mse(offrl_act(Path(r["run_dir"])), obs, acts)
            if args.long_episodes:
                long = {**protocol, "episodes": args.long_episodes}
                for r in runs:
                    r["normalized_score_long"] = evaluate(
                        Path(r["run_dir"]), source, long,
                        f"offrl_eval_{args.long_episodes}.json")["normalized_score"]
                for r in off:
                    r["normalized_score_long"] = long_eval_offrl(
                        Path(r["run_dir"]), args.long_episodes, args)
        datasets.append({
            "name": name, "source": source, "export": str(data),
            "d3rlpy": {"runs": runs, **{k: stats([r.get(k) for r in runs]) for k in STATS}},
            "offrl": {"runs": off, **{k: stats([r.get(k) for r in off]) for k in STATS}},
        })
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__, "machine": f"{platform.machine()}, "
                f"{os.cpu_count()} cpus", "d3rlpy": "see runs' d3rlpy_config / peer.json"}
    d3 = [r for d in datasets for r in d["d3rlpy"]["runs"]]
    if d3:
        versions["d3rlpy"] = json.loads(Path(d3[0]["run_dir"], "peer.json").read_text())["library"]
    report = {"format": "offrl-peer-check/1", "algo": "bc", "steps": args.steps,
              "threads": args.threads, "protocol": protocol,
              "long_episodes": args.long_episodes, "commands": commands,
              "versions": versions, "datasets": datasets}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(args.out)
    args.out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
