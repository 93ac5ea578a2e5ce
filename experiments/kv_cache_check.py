"""Does the DT key/value cache change what a trained policy achieves?

The cache (`DTConfig.kv_cache`, offrl/algorithms/dt_cache.py) is exact until an episode is
longer than the context K and a documented approximation after. This script evaluates trained
DT checkpoints both ways on the same episode seeds and target returns and prints the
returns side by side, with how many episodes ended with the same return.

    python experiments/kv_cache_check.py RUN_OR_CHECKPOINT [...] [--episodes 100] [--envs 20]
        [--out experiments/results/kv_cache_check.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from offrl.algorithms import DTPolicy
from offrl.checkpoint import load_checkpoint, resolve_checkpoint, restore_algorithm
from offrl.config import from_dict
from offrl.evaluator import Evaluator


def check(path: str, episodes: int, envs: int) -> dict:
    ckpt = resolve_checkpoint(path)
    payload = load_checkpoint(ckpt)
    config = from_dict(payload["run_config"], f"{ckpt} run_config")
    algo = restore_algorithm(payload, "cpu", ckpt)
    if payload["algo"] != "dt":
        raise SystemExit(f"{ckpt}: a {payload['algo']} checkpoint, not a DT one")
    env = payload["env_id"]
    targets = tuple(payload.get("eval_targets") or (algo.resolved["target_return"],))
    row = {"checkpoint": str(ckpt), "env": env, "context": algo.config.context,
           "step": payload["step"], "targets": {}}
    ev = Evaluator(env, min(envs, episodes))  # one set of envs for every target and mode
    for target in targets:
        out = {}
        for mode in ("exact", "kv-cache"):
            policy = DTPolicy(algo, ev.num_envs, kv_cache=mode == "kv-cache")
            t0 = time.perf_counter()
            (res,) = ev.evaluate(policy, episodes, target_returns=(target,),
                                 seed=config.resolved_eval_seed)
            out[mode] = {"returns": res.returns.tolist(), "s": time.perf_counter() - t0,
                         "lengths_mean": float(res.lengths.mean())}
        a, b = (np.array(out[m]["returns"]) for m in ("exact", "kv-cache"))
        row["targets"][str(target)] = {
            **out, "same_return": int(np.isclose(a, b, atol=1e-6).sum()),
            "mean_exact": float(a.mean()), "mean_kv": float(b.mean()),
            "std_exact": float(a.std()), "std_kv": float(b.std())}
        print(f"{ckpt} (K={algo.config.context}) target {target}: exact {a.mean():.3f} +- "
              f"{a.std():.3f}, kv-cache {b.mean():.3f} +- {b.std():.3f}; same return in "
              f"{row['targets'][str(target)]['same_return']}/{episodes} episodes; time "
              f"{out['exact']['s']:.1f} s vs {out['kv-cache']['s']:.1f} s")
    ev.close()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--envs", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [check(c, args.episodes, args.envs) for c in args.checkpoints]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
