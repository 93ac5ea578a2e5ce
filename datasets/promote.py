"""Pick a behaviour policy from an online SAC run and ship it in envs/policies/.

    python -m offrl.datasets.promote --run runs/behaviour/walker2d --env walker2d --level medium
    python -m offrl.datasets.promote --run runs/behaviour/hopper --env hopper --level expert

Snapshots carry a DETERMINISTIC return (the SAC run's own evaluation), but recipes record
with actions SAMPLED from the policy, which usually scores lower. So the candidates are
re-measured the way they will be used: `--episodes` stochastic episodes on fixed seeds with
the vectorized evaluator. medium = the candidate whose stochastic return is closest to
`--fraction` (1/3, D4RL's definition) of D4RL's expert reference score; expert = the best
stochastic return among the `--candidates` best deterministic snapshots. The measured
numbers are stored in the shipped file (`stochastic_return_mean`, `..._std`, `..._episodes`)
and checked by tests/test_shipped_policies.py. For medium, the run's replay buffer up to
that snapshot is shipped too (the medium-replay level).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offrl.datasets.core import DatasetError
from offrl.datasets.recipes import (
    MUJOCO_ENVS,
    BehaviourPolicy,
    promote_snapshot,
    snapshot_returns,
)
from offrl.envs.facts import ENV_FACTS

EVAL_SEED = 500_000  # far from the recipes' collection seeds


def stochastic_return(snapshot: Path, episodes: int, seed: int = EVAL_SEED) -> tuple[float, float]:
    """Mean and std of the return over `episodes` episodes with sampled actions."""
    from offrl.evaluator import Evaluator

    snap = torch.load(snapshot, map_location="cpu", weights_only=False)
    policy = BehaviourPolicy(snap, num_envs=episodes, seed=seed, deterministic=False)
    with Evaluator(snap["env_id"], episodes) as ev:
        (res,) = ev.evaluate(policy, episodes, seed=seed)
    return float(res.returns.mean()), float(res.returns.std())


def choose(run: Path, env: str, level: str, fraction: float, episodes: int,
           candidates: int, log=print) -> tuple[Path, dict[str, Any]]:
    snaps, det = snapshot_returns(run)
    if level == "expert":
        order = np.argsort(-det)[:candidates]
    else:
        target = fraction * float(ENV_FACTS[env].ref_max_score)
        # Sampling costs return, so candidates sit at or above the target deterministically.
        order = np.argsort(np.abs(det - 1.15 * target))[:candidates]
    measured = []
    for i in order:
        mean, std = stochastic_return(snaps[i], episodes)
        measured.append((snaps[i], mean, std))
        log(f"  {snaps[i].name}: deterministic {det[i]:8.1f}  stochastic {mean:8.1f} +- {std:6.1f}")
    if level == "expert":
        best = max(measured, key=lambda m: m[1])
    else:
        best = min(measured, key=lambda m: abs(m[1] - target))
    snap, mean, std = best
    return snap, {"stochastic_return_mean": mean, "stochastic_return_std": std,
                  "stochastic_episodes": episodes, "stochastic_seed": EVAL_SEED,
                  "level": level}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="behaviour run directory")
    p.add_argument("--env", choices=MUJOCO_ENVS, required=True)
    p.add_argument("--level", choices=("medium", "expert"), required=True)
    p.add_argument("--fraction", type=float, default=1 / 3,
                   help="medium: target share of D4RL's expert reference score")
    p.add_argument("--episodes", type=int, default=10, help="stochastic episodes per candidate")
    p.add_argument("--candidates", type=int, default=5, help="snapshots to re-measure")
    p.add_argument("--dry-run", action="store_true", help="measure and report, ship nothing")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        snap, stats = choose(args.run, args.env, args.level, args.fraction, args.episodes,
                             args.candidates)
    except DatasetError as exc:
        raise SystemExit(f"error: {exc}") from None
    step = torch.load(snap, weights_only=False)["step"]
    print(f"{args.env}-{args.level}: {snap.name} (step {step}), stochastic return "
          f"{stats['stochastic_return_mean']:.1f} +- {stats['stochastic_return_std']:.1f}")
    if args.dry_run:
        return
    replay = args.run / "replay.hdf5" if args.level == "medium" else None
    target = promote_snapshot(snap, args.env, args.level, replay=replay, extra=stats)
    print(f"shipped {target}" + (" and its medium-replay buffer" if replay else ""))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
