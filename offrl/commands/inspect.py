"""`offrl inspect <checkpoint> --dataset <source>`: what a Decision Transformer has learned."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import tyro

from offrl.cli import parse


@dataclass
class InspectArgs:
    """Write a markdown report with figures (attention per layer and head, attention
    rollout along episodes, Key-to-Door key/door attention, return conditioning,
    action-prediction error) and the raw numbers as JSON for a DT checkpoint."""

    checkpoint: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="CHECKPOINT")]
    """Checkpoint file (ckpt_<step>.pt, best.pt) or run folder."""
    dataset: str
    """Dataset source (Minari id or path, D4RL file, pickle, npz) whose episodes to inspect."""
    episodes: tuple[int, ...] = (0,)
    """Dataset episodes whose attention to plot."""
    step: int | None = None
    """Episode step the attention window ends at (default: each episode's last step)."""
    targets: tuple[float, ...] | None = None
    """Target returns of the conditioning sweep (default: 5 points over the dataset's return
    range plus the run's own targets)."""
    eval_episodes: int = 5
    """Evaluation episodes per target (0 skips the sweep)."""
    eval_envs: int = 5
    """Envs stepped in lockstep during the sweep."""
    error_episodes: int = 20
    """Dataset episodes (the first ones) for the action-prediction error."""
    seed: int = 0
    """Evaluation episode j resets with seed + j."""
    out: str = "inspect"
    """Output folder for report.md, the PNGs and inspect.json."""
    device: str = "cpu"
    """Torch device."""


def main(argv: Sequence[str], prog: str) -> int:
    args = parse(InspectArgs, argv, prog)
    from offrl.checkpoint import CheckpointError
    from offrl.config import ConfigError
    from offrl.inspect import inspect_checkpoint

    try:
        report = inspect_checkpoint(
            args.checkpoint, args.dataset, args.out, episodes=list(args.episodes),
            step=args.step, targets=list(args.targets) if args.targets else None,
            eval_episodes=args.eval_episodes, eval_envs=args.eval_envs,
            error_episodes=args.error_episodes, seed=args.seed, device=args.device)
    except (CheckpointError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report)
    return 0
