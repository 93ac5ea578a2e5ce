"""The d3rlpy side of the peer check: export the dataset, train d3rlpy in its own venv
(`benchmarks/peers/d3rlpy_train.py`, one process at a time), score its exported policy with
offrl's evaluator (`benchmarks/peers/d3rlpy_policy.py`), exactly the protocol of the study."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.peer.algos import ROOT, PeerAlgo


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
    """The dataset as D4RL-layout HDF5 (reused when it exists)."""
    if path.is_file():
        return
    from benchmarks.peers.export_d4rl import export_d4rl
    from offrl.datasets import load_dataset

    export_d4rl(load_dataset(source, env_id=env_id), path)
    print(f"exported {source} -> {path}", flush=True)


def train_command(algo: PeerAlgo, python: Path, data: Path, steps: int, seed: int,
                  threads: int, run_dir: Path, config_json: Path | None) -> list[str]:
    """d3rlpy_train.py's command line (BC: exactly the original peer check's)."""
    cmd = [str(python), "benchmarks/peers/d3rlpy_train.py", "--data", str(data),
           "--algo", algo.name, "--steps", str(steps), "--seed", str(seed),
           "--threads", str(threads), "--out", str(run_dir)]
    if config_json is not None:
        cmd += ["--config-json", str(config_json)]
    if algo.steps_per_epoch is not None:
        cmd += ["--steps-per-epoch", str(min(steps, algo.steps_per_epoch))]
    return cmd


def needs_training(run_dir: Path, steps: int, kwargs: dict[str, Any] | None) -> bool:
    """False when run_dir holds a finished d3rlpy run (peer.json) of this step count and
    configuration; a finished run of another one is an error (never silently mixed)."""
    peer = run_dir / "peer.json"
    if not peer.is_file():
        return True
    meta = json.loads(peer.read_text())
    if meta["steps"] != steps:
        raise SystemExit(f"{peer} has {meta['steps']} steps, expected {steps}: remove "
                         f"{run_dir} to retrain")
    if kwargs is not None and meta.get("config_kwargs") != kwargs:
        raise SystemExit(f"{peer} was trained with another d3rlpy configuration "
                         f"({meta.get('config_kwargs')} != {kwargs}): remove {run_dir} to retrain")
    return False


def evaluate(run_dir: Path, source: str, protocol: dict[str, Any],
             name: str = "offrl_eval.json", d3rlpy_python: Path | None = None
             ) -> dict[str, Any]:
    """Score d3rlpy's policy.pt with offrl's evaluator (cached in run_dir/name, reused only
    for the same protocol). With `protocol["targets"]` (DT): model.d3 acting through d3rlpy's
    stateful wrapper in `d3rlpy_python`, once per target on the same episode seeds; the top
    level holds the first target's results, `by_target` every target's summary."""
    out = run_dir / name
    if out.is_file():
        cached = json.loads(out.read_text())
        if cached.get("protocol") == protocol:
            return cached
    import torch

    from benchmarks.peers.d3rlpy_policy import D3rlpyDTPolicy, D3rlpyPolicy
    from offrl.datasets import load_dataset
    from offrl.envs import env_spaces
    from offrl.evaluator import Evaluator, reference_scores

    torch.set_num_threads(1)
    env_id = protocol["env_id"]
    # The reference scores offrl's trainer uses: the dataset's metadata, else the env table.
    ref = reference_scores(env_id, load_dataset(source, env_id=env_id).meta)
    _, act_space = env_spaces(env_id)
    n = min(protocol["num_envs"], protocol["episodes"])
    targets = protocol.get("targets") or [None]
    t0 = time.perf_counter()
    with Evaluator(env_id, n, ref_scores=ref) as ev:
        if protocol.get("targets"):
            if d3rlpy_python is None:
                raise ValueError("evaluating a d3rlpy DT needs d3rlpy_python")
            with D3rlpyDTPolicy(run_dir / "model.d3", n, act_space.low, act_space.high,
                                d3rlpy_python) as policy:
                results = ev.evaluate(policy, protocol["episodes"], target_returns=targets,
                                      seed=protocol["eval_seed"])
        else:
            policy = D3rlpyPolicy(run_dir / "policy.pt", n, act_space.low, act_space.high)
            results = ev.evaluate(policy, protocol["episodes"], seed=protocol["eval_seed"])
    res = results[0]
    by_target = ({"by_target": {f"{t:g}": r.summary() for t, r in zip(targets, results,
                                                                      strict=True)}}
                 if protocol.get("targets") else {})
    result = {"protocol": protocol, "ref_scores": list(ref) if ref else None,
              "eval_s": time.perf_counter() - t0, **res.summary(), **by_target,
              "returns": res.returns.tolist(), "lengths": res.lengths.tolist(),
              "normalized_scores": (res.normalized_scores.tolist()
                                    if res.normalized_scores is not None else None)}
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def d3rlpy_act(run_dir: Path) -> Any:
    """Greedy actions of d3rlpy's exported policy: (n, obs_dim) -> (n, A) in [-1, 1]."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(run_dir / "policy.pt"), map_location="cpu").eval()
    return lambda o: np.clip(module(torch.as_tensor(o)).numpy(), -1.0, 1.0)


def d3rlpy_runs(algo: PeerAlgo, name: str, source: str, data: Path,
                kwargs: dict[str, Any] | None, protocol: dict[str, Any], args: Any
                ) -> list[dict[str, Any]]:
    """Train (unless done) and score d3rlpy's `algo` for seeds 0..args.seeds-1 on one dataset."""
    config_json = None
    if kwargs is not None:
        config_json = args.work / f"d3rlpy-{algo.name}-config.json"
        if not args.no_train:
            config_json.parent.mkdir(parents=True, exist_ok=True)
            config_json.write_text(json.dumps(kwargs, indent=1) + "\n")
    runs = []
    for seed in range(args.seeds):
        run_dir = args.work / name / f"{algo.name}-seed{seed}"
        cmd = train_command(algo, args.d3rlpy_python, data, args.steps, seed, args.threads,
                            run_dir, config_json)
        if needs_training(run_dir, args.steps, kwargs):
            if args.no_train:
                continue
            export(source, data, args.env_id)
            run_dir.mkdir(parents=True, exist_ok=True)
            print(f"training d3rlpy {algo.label} {name} seed {seed} ...", flush=True)
            run_logged(cmd, run_dir / "train.log")
        if args.no_train and not (run_dir / "offrl_eval.json").is_file():
            continue
        ev = evaluate(run_dir, source, protocol, d3rlpy_python=args.d3rlpy_python)
        meta = json.loads((run_dir / "peer.json").read_text())
        print(f"  {name} seed {seed}: normalized {ev['normalized_score']:.1f}, return "
              f"{ev['return_mean']:.0f}, train {meta['wall_time_s']:.0f} s", flush=True)
        runs.append({"seed": seed, "run_dir": str(run_dir), "steps": meta["steps"],
                     "train_wall_s": meta["wall_time_s"], "command": shlex.join(cmd),
                     "return_mean": ev["return_mean"], "return_std": ev["return_std"],
                     "normalized_score": ev["normalized_score"],
                     **algo.d3rlpy_diag(run_dir, meta["steps"]),
                     **({"normalized_score_by_target": {
                         t: r["normalized_score"] for t, r in ev["by_target"].items()}}
                        if "by_target" in ev else {}),
                     "returns": ev["returns"], "lengths": ev["lengths"],
                     "d3rlpy_config": meta["config"]})
    return runs


def python_ok(path: Path) -> None:
    if not path.is_file():
        raise SystemExit(f"{path} not found: make venv-d3rlpy (or pass --d3rlpy-python)")
