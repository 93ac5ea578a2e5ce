"""Evaluation throughput: a Decision Transformer evaluated on 10 Hopper-v5 episodes with 10
envs in lockstep (one batched forward per step) vs the same policy one env at a time.

The DT is untrained (built from a few random-action Hopper episodes): speed does not depend
on the weights, only on the number of forward passes and env steps. By default the episodes
run the full 1000 steps (`terminate_when_unhealthy=False`), so both sides do exactly
10 x 1000 env steps and the comparison is not skewed by an untrained hopper falling early;
`--terminate` uses the standard env instead. Same env seeds on both sides; the returns are
checked to match. Target: >= 5x on 2 CPU cores (issue #4), >= 10x (issue #8).

Two acting modes are timed: `exact` (the reference's full K-step window per step, with the
last block computing only the query it needs) and `kv-cache` (`DTConfig.kv_cache`: exact
while t < K, a documented deviation after; see offrl/algorithms/dt_cache.py).

    python benchmarks/eval_speed.py [--episodes 10] [--envs 10] [--device cpu] [--threads 0]
        [--modes exact kv-cache] [--out benchmarks/results/eval_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--envs", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--terminate", action="store_true", help="standard env (early falls)")
    p.add_argument("--dt", choices=sorted(DT_SIZES), default="paper",
                   help="paper: K=20, 128-dim, 3 layers; demo: the demo's K=5, 64-dim, 1 layer")
    p.add_argument("--modes", nargs="+", choices=["exact", "kv-cache"],
                   default=["exact", "kv-cache"])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_speed.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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

    def timed(num_envs: int, kv_cache: bool) -> tuple[float, np.ndarray, int]:
        with Evaluator(env_fn, num_envs) as ev:
            policy = DTPolicy(algo, num_envs, kv_cache=kv_cache)
            t0 = time.perf_counter()
            (res,) = ev.evaluate(policy, args.episodes, target_returns=(3600.0,), seed=100)
            return time.perf_counter() - t0, res.returns, int(res.lengths.sum())

    result = {
        "env": ENV_ID, "terminate_when_unhealthy": args.terminate, "episodes": args.episodes,
        "envs": args.envs, "device": args.device, "torch_threads": torch.get_num_threads(),
        "dt": f"{args.dt}: K={config.context}, {config.embed_dim}-dim, {config.num_layers} layers",
        "python": platform.python_version(), "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "modes": {},
    }
    print(f"DT ({result['dt']}) on {ENV_ID}: {args.episodes} episodes, "
          f"{torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f}")
    for mode in args.modes:
        kv = mode == "kv-cache"
        t_vec, r_vec, steps = timed(args.envs, kv)
        t_one, r_one, steps_one = timed(1, kv)
        assert steps == steps_one, (steps, steps_one)
        # Batched and single-row forwards differ in float rounding only.
        max_diff = float(np.max(np.abs(r_vec - r_one)))
        result["modes"][mode] = {
            "env_steps": steps, "vectorized_s": round(t_vec, 3), "one_env_s": round(t_one, 3),
            "speedup": round(t_one / t_vec, 2),
            "vectorized_env_steps_per_s": round(steps / t_vec, 1),
            "one_env_env_steps_per_s": round(steps / t_one, 1),
            "max_return_difference": max_diff,
        }
        print(f"  [{mode}] {args.envs} envs in lockstep: {t_vec:7.2f} s "
              f"({steps / t_vec:8.0f} steps/s); one env at a time: {t_one:7.2f} s "
              f"({steps / t_one:8.0f} steps/s); speed-up {t_one / t_vec:.1f}x; "
              f"max |return difference| {max_diff:.3g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
