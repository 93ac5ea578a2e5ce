"""Evaluation throughput: a Decision Transformer evaluated on 10 Hopper-v5 episodes with 10
envs in lockstep (one batched forward per step) vs the same policy one env at a time.

The DT is untrained (built from a few random-action Hopper episodes): speed does not depend
on the weights, only on the number of forward passes and env steps. By default the episodes
run the full 1000 steps (`terminate_when_unhealthy=False`), so both sides do exactly
1000 env steps per episode and the comparison is not skewed by an untrained hopper falling
early; `--terminate` uses the standard env instead. Same env seeds on both sides; the returns
are checked to match (up to batched-vs-single-row float rounding). Target: >= 5x (issue #4),
and 10 envs >= 10x sequential evaluation (issue #8).

`--peer` adds the peer's sequential evaluation to every round: d3rlpy 2.8.1's DT (the same
architecture, untrained) acting through its `StatefulTransformerWrapper`, one env at a time,
on the same episode seeds (benchmarks/d3rlpy_eval_worker.py, in `.venv-d3rlpy`); each mode's
"vs d3rlpy sequential" figure is the median over rounds of its N-env rate over the peer's
rate in the same round.

Acting modes (each timed on both sides with the same policy settings): `exact` (the
reference's full K-step window per step, the last block computing only the query it needs),
`kv-cache` (`DTConfig.kv_cache`: exact while t < K, a documented deviation after; see
offrl/algorithms/dt_cache.py), and `exact-bf16` / `kv-cache-bf16` (`DTPolicy(precision=
"bf16")`, opt-in; returns differ from fp32 by bf16 rounding).

Interleaved measurement (robust to a busy machine): the two sides of a mode alternate in one
process, round by round. A round is one vectorized evaluation of all E episodes on N envs
next to one sequential chunk of `--chunk` episodes on one env (the chunks cycle through the
same E seeds, so `--rounds` = E / chunk covers every episode once on each side); the order
within a round alternates. Reported: medians over rounds of env steps/s per side and of the
per-round ratio; the speed-up vs sequential exact fp32 uses each round's `exact` sequential
chunk when that mode runs (else it is left out).

    python -m benchmarks.eval_speed [--episodes 10] [--envs 10] [--device cpu] [--threads 1]
        [--modes exact kv-cache exact-bf16 kv-cache-bf16] [--chunk 2] [--rounds 0]
        [--vector lockstep] [--env-threads 1] [--peer] [--peer-threads 0]
        [--out benchmarks/results/eval_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from benchmarks.peers.export_d4rl import export_d4rl
from offrl.algorithms import DT, DTPolicy
from offrl.datasets import DatasetMeta, EpisodeDataset
from offrl.envs import make_env
from offrl.evaluator import Evaluator
from offrl.types import Episode

ENV_ID = "Hopper-v5"
DT_SIZES = {
    "paper": {},  # DTConfig defaults: K=20, 128-dim, 3 layers, 1 head
    "demo": {"context": 5, "embed_dim": 64, "num_layers": 1},
}


def random_episodes(n: int, seed: int) -> list[Episode]:
    env = make_env(ENV_ID)
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        obs, _ = env.reset(seed=seed + i)
        rows, acts, rews, done, term = [obs], [], [], False, False
        while not done:
            a = rng.uniform(-1, 1, 3).astype(np.float32)
            obs, r, term, trunc, _ = env.step(a)
            rows.append(obs)
            acts.append(a)
            rews.append(r)
            done = term or trunc
        episodes.append(Episode(np.array(rows, np.float32), np.array(acts), np.array(
            rews, np.float32), bool(term), not term))
    env.close()
    return episodes


ROOT = Path(__file__).resolve().parent.parent
D3RLPY_PYTHON = ROOT / ".venv-d3rlpy" / "bin" / "python"


class PeerEval:
    """benchmarks/d3rlpy_eval_worker.py as a subprocess: d3rlpy's sequential evaluation."""

    def __init__(self, data: Path, target: float, terminate: bool) -> None:
        if not D3RLPY_PYTHON.exists():
            raise SystemExit(f"--peer needs {D3RLPY_PYTHON} (make venv-d3rlpy)")
        cmd = [str(D3RLPY_PYTHON), str(ROOT / "benchmarks" / "d3rlpy_eval_worker.py"),
               "--data", str(data), "--target", str(target)] + (["--terminate"] if terminate
                                                                 else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.info = self._receive()

    def _receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"d3rlpy eval worker exited (code {self.proc.wait()}); see its "
                             f"stderr above")
        return json.loads(line)

    def run(self, seeds: list[int], threads: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": "run", "seeds": seeds, "threads": threads})
                              + "\n")
        self.proc.stdin.flush()
        return self._receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


MODES = {  # name -> (kv_cache, precision)
    "exact": (False, "fp32"), "kv-cache": (True, "fp32"),
    "exact-bf16": (False, "bf16"), "kv-cache-bf16": (True, "bf16"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--envs", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--terminate", action="store_true", help="standard env (early falls)")
    p.add_argument("--dt", choices=sorted(DT_SIZES), default="paper",
                   help="paper: K=20, 128-dim, 3 layers; demo: the demo's K=5, 64-dim, 1 layer")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--chunk", type=int, default=2,
                   help="episodes per sequential (one-env) chunk in a round")
    p.add_argument("--rounds", type=int, default=0,
                   help="rounds per mode (0: episodes / chunk, every episode once per side)")
    p.add_argument("--vector", choices=["lockstep", "sync", "async"], default="lockstep",
                   help="how the Evaluator steps its envs (both sides)")
    p.add_argument("--env-threads", type=int, default=1,
                   help="lockstep only: threads stepping the N envs (the one-env side has 1)")
    p.add_argument("--peer", action="store_true",
                   help="also time d3rlpy's sequential DT evaluation in every round")
    p.add_argument("--peer-threads", type=int, default=0,
                   help="torch threads of the peer (0: the same as offrl's); e.g. 2 beside "
                        "--threads 1 --env-threads 2, so both sides use the 2 cores")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_speed.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.chunk < 1 or args.episodes < 1 or args.envs < 1:
        p.error("--episodes, --envs and --chunk must be >= 1")
    if args.peer_threads < 0:
        p.error(f"--peer-threads must be >= 0, got {args.peer_threads}")
    chunk = min(args.chunk, args.episodes)
    rounds = args.rounds or -(-args.episodes // chunk)
    torch.manual_seed(0)

    env_obs, env_act = make_env(ENV_ID).observation_space, make_env(ENV_ID).action_space
    data = EpisodeDataset.from_episodes(
        random_episodes(5, 0), observation_space=env_obs, action_space=env_act,
        meta=DatasetMeta(name="hopper-random-tiny", env_id=ENV_ID))
    config = DT.Config(**DT_SIZES[args.dt])
    algo = DT.from_dataset(config, data, args.device)
    kwargs = {} if args.terminate else {"terminate_when_unhealthy": False}

    def env_fn() -> gym.Env:
        return make_env(ENV_ID, **kwargs)

    seed0, target = 100, 3600.0
    peer = None
    peer_threads = args.peer_threads or torch.get_num_threads()
    if args.peer:
        tmp = tempfile.TemporaryDirectory()
        export_d4rl(data, Path(tmp.name) / "hopper-random-tiny.hdf5")
        peer = PeerEval(Path(tmp.name) / "hopper-random-tiny.hdf5", target, args.terminate)
        peer.run([seed0], peer_threads)  # warm-up (not timed)
    vec_env = Evaluator(env_fn, args.envs, vector=args.vector, env_threads=args.env_threads)
    one_env = Evaluator(env_fn, 1, vector=args.vector)

    def timed(ev: Evaluator, policy: DTPolicy, episodes: int, seed: int) -> tuple[
            float, np.ndarray, int]:
        t0 = time.perf_counter()
        (res,) = ev.evaluate(policy, episodes, target_returns=(target,), seed=seed)
        return time.perf_counter() - t0, res.returns, int(res.lengths.sum())

    result = {
        "env": ENV_ID, "terminate_when_unhealthy": args.terminate, "episodes": args.episodes,
        "envs": args.envs, "device": args.device, "torch_threads": torch.get_num_threads(),
        "dt": f"{args.dt}: K={config.context}, {config.embed_dim}-dim, {config.num_layers} layers",
        "vector": args.vector, "env_threads": args.env_threads,
        "interleaved": {"rounds": rounds, "chunk": chunk},
        "python": platform.python_version(), "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg(), "modes": {},
    }
    print(f"DT ({result['dt']}) on {ENV_ID}: {args.episodes} episodes, {args.envs} envs "
          f"({args.vector}), {torch.get_num_threads()} torch thread(s), load average "
          f"{os.getloadavg()[0]:.1f}; interleaved: {rounds} rounds, sequential chunks of "
          f"{chunk} episode(s)")
    policies = {mode: (DTPolicy(algo, args.envs, kv_cache=MODES[mode][0],
                                precision=MODES[mode][1]),
                       DTPolicy(algo, 1, kv_cache=MODES[mode][0], precision=MODES[mode][1]))
                for mode in args.modes}
    rates: dict[str, dict[str, list[float]]] = {m: {"vec": [], "one": []} for m in args.modes}
    vec_returns = {}
    peer_rates: list[float] = []
    one_returns = {m: np.full(args.episodes, np.nan) for m in args.modes}
    for vec_pol, _ in policies.values():  # warm-up (not timed)
        timed(vec_env, vec_pol, min(args.envs, args.episodes), seed0)
    # Rounds outside, modes inside: every mode's two sides, and the exact sequential chunk
    # that the "vs exact fp32" figure divides by, ran within the same round.
    for r in range(rounds):
        first = (r * chunk) % args.episodes
        n_one = min(chunk, args.episodes - first)
        for mode, (vec_pol, one_pol) in policies.items():
            for side in (["vec", "one"] if r % 2 == 0 else ["one", "vec"]):
                if side == "vec":
                    t, vec_returns[mode], steps = timed(vec_env, vec_pol, args.episodes, seed0)
                else:
                    t, ret, steps = timed(one_env, one_pol, n_one, seed0 + first)
                    one_returns[mode][first:first + n_one] = ret
                rates[mode][side].append(steps / t)
        if peer is not None:
            res = peer.run(list(range(seed0 + first, seed0 + first + n_one)),
                           peer_threads)
            peer_rates.append(res["steps"] / res["seconds"])
    seq_exact = rates["exact"]["one"] if "exact" in rates else None
    for mode in args.modes:
        kv, precision = MODES[mode]
        vec_rate, one_rate = rates[mode]["vec"], rates[mode]["one"]
        ratios = [v / o for v, o in zip(vec_rate, one_rate, strict=True)]
        done = ~np.isnan(one_returns[mode])
        # Batched and single-row forwards differ in float rounding only.
        max_diff = float(np.max(np.abs(vec_returns[mode][done] - one_returns[mode][done])))
        row = {
            "precision": precision, "kv_cache": kv,
            "vectorized_env_steps_per_s": round(float(np.median(vec_rate)), 1),
            "one_env_env_steps_per_s": round(float(np.median(one_rate)), 1),
            "speedup": round(float(np.median(ratios)), 2),
            "round_ratios": [round(x, 2) for x in ratios],
            "max_return_difference": max_diff,
            "return_mean_vectorized": float(vec_returns[mode].mean()),
        }
        msg = ""
        if seq_exact is not None:
            vs = [v / s for v, s in zip(vec_rate, seq_exact, strict=True)]
            row["speedup_vs_one_env_exact_fp32"] = round(float(np.median(vs)), 2)
            msg = f"; vs 1 env exact fp32 {row['speedup_vs_one_env_exact_fp32']:.1f}x"
        if peer_rates:
            vs = [v / s for v, s in zip(vec_rate, peer_rates, strict=True)]
            row["speedup_vs_d3rlpy_sequential"] = round(float(np.median(vs)), 2)
            msg += f"; vs d3rlpy sequential {row['speedup_vs_d3rlpy_sequential']:.1f}x"
        result["modes"][mode] = row
        print(f"  [{mode}] {args.envs} envs: {row['vectorized_env_steps_per_s']:8.0f} steps/s; "
              f"1 env: {row['one_env_env_steps_per_s']:8.0f} steps/s; speed-up "
              f"{row['speedup']:.1f}x (rounds {row['round_ratios']}){msg}; "
              f"max |return difference| {max_diff:.3g}")
    if peer is not None:
        result["d3rlpy_sequential"] = {
            "torch_threads": peer_threads,
            "env_steps_per_s": round(float(np.median(peer_rates)), 1),
            "round_rates": [round(x, 1) for x in peer_rates], **peer.info}
        print(f"  [d3rlpy 2.8.1 sequential, StatefulTransformerWrapper] 1 env: "
              f"{result['d3rlpy_sequential']['env_steps_per_s']:8.0f} steps/s")
        peer.close()
        tmp.cleanup()
    vec_env.close()
    one_env.close()
    result["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")  # no half-written results file
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
