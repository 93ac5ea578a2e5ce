"""Peer check: d3rlpy 2.8.1 BC / CQL / DT vs offrl's on the generated MuJoCo datasets, one protocol.

For every dataset and seed: export the offrl dataset to a D4RL-layout HDF5 file
(`benchmarks/peers/export_d4rl.py`), train d3rlpy's `--algo` for `--steps` gradient steps in the
d3rlpy venv (`benchmarks/peers/d3rlpy_train.py`, one process at a time, `--threads` torch
threads), then score its exported policy with offrl's `Evaluator` exactly as the MuJoCo suites score
offrl's runs (`experiments/suites/{hopper,mujoco}-cpu.yaml` + `configs/mujoco-cpu-<algo>.yaml`:
10 episodes on 10 envs, episode j reset with seed 1,000,000 + j for every run, D4RL-style
normalized score with the dataset's reference scores). `--env` picks hopper (default),
halfcheetah or walker2d. The offrl side is read from the study's run folders
(`<compare>/<env>-<level>/runs/<algo>/seed<k>/summary.json`, read only; `--compare` defaults
to `runs/compare/hopper` for hopper, `runs/compare/mujoco` for the other two).

For seeds the study has not finished, `--offrl-train` runs the suite's exact `offrl train`
command itself (into `--work`); such runs reproduce the study's bit for bit (checked for BC:
same final returns on three seeds). Diagnostics beside the protocol's score: each final policy
over `--long-episodes` (50) episodes, training diagnostics over the second half of the run (BC:
the loss; CQL: TD loss, CQL gap, SAC temperature), and the action MSE on a fixed 100k-step
sample of the dataset.

CQL: d3rlpy's `CQLConfig` is mapped from the config the suites train offrl's CQL with
(`experiments/configs/mujoco-cpu-cql.yaml`, 10k steps) by `benchmarks/peers/d3rlpy_config.py`:
batch 256, gamma 0.99, tau 0.005, twin critics and actor 256x3, actor lr 1e-4, critic lr 3e-4,
temperature lr 1e-4 from 1.0 (target entropy -|A| in both), 10 sampled actions per proposal,
fixed conservative weight 5 (alpha lr 0, alpha 1, threshold 0), no soft / max-Q backup,
standardized observations, no action / reward scaler. What still differs (also written into
the report, from `remaining_differences`):
- TD target action: offrl samples a' ~ pi(.|s') without an entropy term; d3rlpy (no soft
  backup) uses the greedy tanh(mu(s')); no d3rlpy setting gives offrl's combination;
- update order: d3rlpy steps the critics, then the temperature, then computes the actor loss
  against the updated critics and temperature; offrl computes all losses from the pre-step
  networks;
- temperature loss: d3rlpy -(alpha (log pi - |A|)), offrl -(log alpha (log pi - |A|));
- observation scaler: d3rlpy divides by std + 1e-3, offrl by max(std, 1e-3); d3rlpy's
  statistics and samples skip the last step of each time-out episode;
- actor heads: d3rlpy separate mu / log-std linears, offrl one linear of width 2|A|;
- precision: the study's offrl CQL ran under bf16 autocast, d3rlpy runs fp32. For a clean
  comparison `--offrl-precision fp32 --offrl-train` trains offrl with the suite's command plus
  `--precision fp32` into --work (the study's bf16 runs are then not used);
- random streams differ: only seed distributions compare.

DT: d3rlpy's `DecisionTransformerConfig` mapped from `configs/mujoco-cpu-dt.yaml` (5k steps;
see `d3rlpy_config.py`; d3rlpy's loss sums over action dims, so its clip threshold is
grad_clip x |A|, and it averages over padded positions too), scored at the suite's target
returns (hopper 3600 and 1800; the headline score is the first, as in the study) with every
action from d3rlpy's own `StatefulTransformerWrapper` (`benchmarks/peers/d3rlpy_dt_actor.py`
in the d3rlpy venv, one wrapper per env of offrl's evaluator). No action MSE for DT (an
action needs a history).

Resumable: a d3rlpy run with `peer.json` (same steps, same d3rlpy arguments) is not trained
again, one with `offrl_eval.json` (from the same protocol) is not evaluated again, an existing
export is reused, an offrl run with a finished summary.json is not trained again.

    .venv/bin/python experiments/peer_check.py --offrl-train         # BC, all three datasets
    .venv/bin/python experiments/peer_check.py --levels medium --seeds 5 --offrl-train \\
        --out experiments/results/peer-check/hopper-medium-bc-5seeds.json
    .venv/bin/python experiments/peer_check.py --algo cql --levels medium-replay \\
        --offrl-precision fp32 --offrl-train \\
        --out experiments/results/peer-check/hopper-medium-replay-cql-fp32.json

    .venv/bin/python experiments/peer_check.py --env halfcheetah --levels medium-replay

Writes `--out` (default experiments/results/peer-check/<env>-<algo>.json) and a markdown table
beside it (same name, .md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: experiments.peer and benchmarks.peers
    sys.path.insert(0, str(ROOT))

from experiments.peer.algos import ALGOS, PeerAlgo, load_offrl_config  # noqa: E402
from experiments.peer.d3rlpy_side import d3rlpy_act, d3rlpy_runs, evaluate, python_ok  # noqa: E402
from experiments.peer.offrl_side import long_eval_offrl, offrl_act, offrl_side  # noqa: E402
from experiments.peer.report import dataset_entry, write_report  # noqa: E402

LEVELS = ("medium", "medium-replay", "medium-expert")
# --env: the generated datasets' env folder -> the study that trained them (the evaluation
# env comes from envs/facts.py).
STUDIES = {"hopper": "hopper", "halfcheetah": "mujoco", "walker2d": "mujoco"}


def protocol_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"env_id": args.env_id, "episodes": args.episodes, "num_envs": args.envs,
            "eval_seed": args.eval_seed}


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


def d3rlpy_kwargs(algo: PeerAlgo, offrl_config: dict[str, Any], env_id: str
                  ) -> dict[str, Any] | None:
    """d3rlpy arguments mapped from offrl's config (CQL, DT); None: d3rlpy_train.py's own
    (BC, kept as the original peer check ran it)."""
    from benchmarks.peers.d3rlpy_config import cql_kwargs, dt_kwargs
    from offrl.envs import env_spaces
    from offrl.envs.facts import find_env_facts

    if algo.name == "cql":
        return cql_kwargs(offrl_config["algo_config"],
                          int(np.prod(env_spaces(env_id)[1].shape)))
    if algo.name == "dt":
        facts = find_env_facts(env_id)
        if facts is None:
            raise SystemExit(f"{env_id}: not in envs/facts.py (DT needs its return scale)")
        # offrl's max_timestep None = max(longest episode, time limit): the time limit bounds
        # the episodes of the generated MuJoCo datasets.
        return dt_kwargs(offrl_config["algo_config"], facts.return_scale,
                         facts.max_episode_steps, int(np.prod(env_spaces(env_id)[1].shape)))
    return None


def dt_targets(offrl_config: dict[str, Any], env_id: str) -> list[float]:
    """The target returns the suite evaluates DT at (config, else the env table's)."""
    from offrl.envs.facts import find_env_facts

    targets = offrl_config.get("target_returns")
    if not targets:
        facts = find_env_facts(env_id)
        targets = list(facts.target_returns) if facts else []
    if not targets:
        raise SystemExit(f"{env_id}: no DT target returns (config or envs/facts.py)")
    return [float(t) for t in targets]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", default="bc", choices=sorted(ALGOS))
    p.add_argument("--levels", nargs="+", default=list(LEVELS), choices=LEVELS)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--steps", type=int, default=None, help="gradient steps (default: the "
                   "suite config's total_steps: BC 20k, CQL 10k)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of training")
    p.add_argument("--env", default="hopper", choices=sorted(STUDIES),
                   help="the generated datasets minari:offrl-mujoco/<env>/<level>-v0")
    p.add_argument("--env-id", default=None, help="evaluation env (default: --env's, "
                   "Hopper-v5 / HalfCheetah-v5 / Walker2d-v5)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--envs", type=int, default=10)
    p.add_argument("--eval-seed", type=int, default=1_000_000)
    p.add_argument("--work", type=Path, default=None, help="exports, d3rlpy run folders, "
                   "offrl runs trained here (default: runs/peers/<env>)")
    p.add_argument("--compare", type=Path, default=None, help="the study's offrl compare "
                   "folder, read only (default: runs/compare/hopper for hopper, "
                   "runs/compare/mujoco otherwise)")
    p.add_argument("--out", type=Path, default=None, help="report JSON (default: "
                   "experiments/results/peer-check/<env>-<algo>.json)")
    p.add_argument("--d3rlpy-python", type=Path, default=ROOT / ".venv-d3rlpy" / "bin" / "python")
    p.add_argument("--long-episodes", type=int, default=50,
                   help="also score every final policy over this many episodes (seeds "
                   "eval_seed + j; less evaluation noise than the protocol's 10; 0: skip)")
    p.add_argument("--offrl-train", action="store_true",
                   help="train offrl (the suite's command) for seeds the study has not "
                   "finished, into --work")
    p.add_argument("--offrl-precision", choices=("fp32", "bf16"), default=None,
                   help="offrl side at this precision (default: the suite config's); the "
                   "study's runs count only if they trained at it, else --offrl-train "
                   "trains the suite's command plus --precision into --work")
    p.add_argument("--no-train", action="store_true",
                   help="only report what exists (no export, training or evaluation)")
    args = p.parse_args(argv)
    if args.no_train:
        args.offrl_train = False
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    from offrl.envs.facts import find_env_facts

    facts = find_env_facts(args.env)
    assert facts is not None, f"{args.env}: not in envs/facts.py"
    args.env_id = args.env_id or facts.env_id
    args.work = args.work or ROOT / "runs" / "peers" / args.env
    args.compare = args.compare or ROOT / "runs" / "compare" / STUDIES[args.env]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    algo = ALGOS[args.algo]
    offrl_config = load_offrl_config(algo, ROOT)
    if args.steps is None:
        args.steps = int(offrl_config["total_steps"])
    if args.out is None:
        args.out = ROOT / "experiments" / "results" / "peer-check" / f"{args.env}-{algo.name}.json"
    # An override equal to the config's precision is no override: the study's runs count.
    config_precision = offrl_config.get("precision", "fp32")
    precision = args.offrl_precision if args.offrl_precision != config_precision else None
    if not args.no_train:
        python_ok(args.d3rlpy_python)
    kwargs = d3rlpy_kwargs(algo, offrl_config, args.env_id)
    protocol = protocol_of(args)
    if algo.sequence:
        protocol["targets"] = dt_targets(offrl_config, args.env_id)
    argv = sys.argv[1:] if argv is None else argv
    commands = [shlex.join([".venv/bin/python", "experiments/peer_check.py", *argv])]
    datasets = []
    for level in args.levels:
        name = f"{args.env}-{level}"
        source = f"minari:offrl-mujoco/{args.env}/{level}-v0"
        data = args.work / f"{name}.hdf5"
        runs = d3rlpy_runs(algo, name, source, data, kwargs, protocol, args)
        off = offrl_side(algo, level, args, precision)
        if runs or off:
            if not algo.sequence:  # a DT action needs a history: no single-step MSE
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
                        f"offrl_eval_{args.long_episodes}.json",
                        args.d3rlpy_python)["normalized_score"]
                for r in off:
                    r["normalized_score_long"] = long_eval_offrl(
                        Path(r["run_dir"]), args.long_episodes, args)
        datasets.append(dataset_entry(algo, name, source, data, runs, off))
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__, "machine": f"{platform.machine()}, "
                f"{os.cpu_count()} cpus", "d3rlpy": "see runs' d3rlpy_config / peer.json"}
    d3 = [r for d in datasets for r in d["d3rlpy"]["runs"]]
    if d3:
        versions["d3rlpy"] = json.loads(Path(d3[0]["run_dir"], "peer.json").read_text())["library"]
    report: dict[str, Any] = {
        "format": "offrl-peer-check/1", "algo": algo.name, "env": args.env, "steps": args.steps,
        "threads": args.threads, "protocol": protocol, "long_episodes": args.long_episodes,
        "commands": commands, "versions": versions, "datasets": datasets}
    if kwargs is not None:  # CQL, DT: d3rlpy's arguments, offrl's precision, what differs
        from benchmarks.peers.d3rlpy_config import dt_differences, remaining_differences

        report["offrl_precision"] = precision or config_precision
        report["d3rlpy_kwargs"] = kwargs
        report["differences"] = (
            dt_differences(precision or config_precision) if algo.sequence else
            remaining_differences(offrl_config["algo_config"], precision or config_precision))
    write_report(report, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
