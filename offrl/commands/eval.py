"""`offrl eval <checkpoint>`: evaluate a checkpoint from the checkpoint alone."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import tyro

from offrl.cli import parse


@dataclass
class EvalArgs:
    """Evaluate a checkpoint (file, or a run folder for its newest checkpoint) in its env.
    Defaults repeat the run's own evaluation: same env, episodes, targets and episode seeds."""

    checkpoint: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="CHECKPOINT")]
    """Checkpoint file (ckpt_<step>.pt, best.pt) or run folder."""
    episodes: int | None = None
    """Episodes per target return (default: the run's num_eval_episodes)."""
    target_return: tuple[float, ...] | None = None
    """Return-to-go targets for return-conditioned policies, e.g. --target-return 3600 1800
    (default: the run's targets)."""
    envs: int | None = None
    """Envs stepped in lockstep (default: the run's num_eval_envs)."""
    seed: int | None = None
    """Episode j resets with seed + j (default: the run's evaluation seed)."""
    env_id: str | None = None
    """Evaluate in another env than the run's (same spaces required)."""
    device: str = "cpu"
    """Torch device for the policy."""
    async_envs: bool = False
    """Step the envs in subprocesses (gymnasium AsyncVectorEnv)."""
    video: str | None = None
    """Also render the first episode to this .mp4/.gif (needs imageio and an rgb_array env)."""
    kv_cache: bool = False
    """DT only: act with the key/value cache (faster; exact while t < K, an approximation
    after: see offrl/algorithms/dt_cache.py and experiments/kv_cache_check.py)."""
    act_precision: Literal["fp32", "bf16"] | None = None
    """DT only: precision of the acting forward (default: the run's; bf16 is faster on CPUs
    with bf16 matmuls and not bit-identical to fp32)."""
    vector: Literal["lockstep", "sync", "async"] | None = None
    """How the envs are stepped: offrl's lockstep loop (default), or gymnasium's
    SyncVectorEnv / AsyncVectorEnv (the same episodes for the same seeds)."""
    env_threads: int = 1
    """Lockstep only: threads stepping the envs (MuJoCo releases the GIL while it steps). On
    a 2-core CPU, a DT with the KV cache at 1 torch thread (--threads 1) and 2 env threads
    ran 8% faster than with 1 env thread; with 2 torch threads it was 3% slower."""
    threads: int = 0
    """Torch CPU threads for the policy (0: torch's default)."""
    json: bool = False
    """Print the results as JSON."""


def main(argv: Sequence[str], prog: str) -> int:
    args = parse(EvalArgs, argv, prog)
    from offrl.checkpoint import CheckpointError
    from offrl.config import ConfigError
    from offrl.evaluator import evaluate_checkpoint

    if args.threads < 0 or args.env_threads < 1:
        print("error: --threads must be >= 0 and --env-threads >= 1", file=sys.stderr)
        return 1
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides: dict[str, object] = {}
    if args.kv_cache:
        overrides["kv_cache"] = True
    if args.act_precision is not None:
        overrides["act_precision"] = args.act_precision
    try:
        results, meta = evaluate_checkpoint(
            args.checkpoint, num_episodes=args.episodes, target_returns=args.target_return,
            num_envs=args.envs, seed=args.seed, env_id=args.env_id, device=args.device,
            async_envs=args.async_envs, video=args.video, vector=args.vector,
            env_threads=args.env_threads, config_overrides=overrides or None)
    except (CheckpointError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = [{"target_return": r.target_return, "episodes": len(r.returns), **r.summary()}
            for r in results]
    if args.json:
        print(json.dumps({**meta, "results": rows}, indent=1))
        return 0
    print(f"{meta['algo']} at step {meta['step']} on {meta['env_id']} ({meta['checkpoint']})")
    cols = ["target_return", "episodes", "return_mean", "return_std", "return_min",
            "return_max", "length_mean", "success_rate", "normalized_score"]
    cols = [c for c in cols if any(c in row for row in rows)]
    print("  ".join(f"{c:>16}" for c in cols))
    for row in rows:
        cells = [row.get(c) for c in cols]
        print("  ".join(f"{'-' if v is None else f'{v:.4g}':>16}" for v in cells))
    return 0
