"""The README's dataset card: generate D4RL-style MuJoCo datasets with `offrl collect mujoco`
recipes and print one markdown row each (episodes, steps, mean return, normalized score,
generation time), plus JSON.

    python experiments/dataset_card.py [--envs hopper walker2d] [--levels medium expert]
        [--episodes 100] [--root /tmp/card] [--out experiments/results/dataset_card.json]

`--episodes` is per policy (medium-expert holds twice as many); medium-replay is the shipped
buffer whatever the count. Levels whose behaviour policy is not shipped are skipped with a
note.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from offrl.datasets import DatasetError, load_dataset
from offrl.datasets.recipes import LEVELS, MUJOCO_ENVS, make_recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="+", choices=MUJOCO_ENVS, default=list(MUJOCO_ENVS))
    p.add_argument("--levels", nargs="+", choices=LEVELS, default=list(LEVELS))
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", type=Path, default=Path("/tmp/offrl-card"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    rows = []
    print("| dataset | episodes | steps | mean return | normalized | generation time |")
    print("|---|---|---|---|---|---|")
    for env in args.envs:
        for level in args.levels:
            t0 = time.perf_counter()
            try:
                path = make_recipe(env, level, args.episodes, args.seed, root=args.root,
                                   force=True, progress=False)
            except DatasetError as exc:
                print(f"| {env} {level} | skipped: {exc} | | | | |")
                continue
            seconds = time.perf_counter() - t0
            ds = load_dataset(path)
            ret = float(ds.episode_returns.mean())
            norm = ds.normalized_score(ret)
            rows.append({"env": env, "level": level, "episodes": ds.num_episodes,
                         "steps": ds.num_steps, "return_mean": ret, "normalized": norm,
                         "seconds": seconds, "load_average": os.getloadavg()[0]})
            print(f"| {env} {level} | {ds.num_episodes} | {ds.num_steps:,} | {ret:.1f} | "
                  f"{norm:.1f} | {seconds:.0f} s |", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"episodes_per_policy": args.episodes,
                                        "seed": args.seed, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
