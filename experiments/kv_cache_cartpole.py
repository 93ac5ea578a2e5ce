"""The DT key/value cache on a multi-layer model whose context window slides: a 3-layer DT
(K=10) trained on graded CartPole data (returns ~70..500, tests/algo_helpers.py), evaluated at
several target returns with the exact window recomputation and with the cache, on the same
episode seeds. Episodes last up to 500 steps, so the cache's approximation (t >= K) is in
play on almost every step.

    python experiments/kv_cache_cartpole.py [--out experiments/results/kv_cache_cartpole.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.algo_helpers

from offrl.algorithms import DT, DTPolicy  # noqa: E402
from tests.algo_helpers import cartpole_failing_dataset, rollout  # noqa: E402

TARGETS = (100, 200, 300, 400, 500)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("experiments/results/kv_cache_cartpole.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = cartpole_failing_dataset(40, seed=0)
    algo = DT.from_dataset(DT.Config(context=10, embed_dim=64, num_layers=3, learning_rate=1e-3,
                                     warmup_steps=100), ds)
    sampler = algo.make_sampler(ds, seed=0)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        algo.update(sampler.sample())
    result = {"config": "DT K=10, 64-dim, 3 layers, 1 head", "steps": args.steps,
              "train_s": round(time.perf_counter() - t0, 1), "episodes": args.episodes}
    for name, kv in (("exact", False), ("kv-cache", True)):
        result[name] = {str(t): float(rollout(
            DTPolicy(algo, 5, kv_cache=kv), lambda: gym.make("CartPole-v1"), 5, args.episodes,
            seed=1000, target_return=t).mean()) for t in TARGETS}
        print(f"{name:9s} target -> mean return: {result[name]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
