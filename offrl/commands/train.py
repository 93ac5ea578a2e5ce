"""`offrl train`: one run of one algorithm on one dataset.

Flags are the `RunConfig` fields plus, once `--algo` is known, the algorithm's own `Config`
fields (so `offrl train --algo dt --help` lists DT's hyperparameters). Precedence, lowest
first: field defaults < `--config` YAML < flags. With `--resume`, the run's saved config is
the base instead and only cadence/evaluation/device fields may differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import tyro

from offrl.config import RunConfig

C = TypeVar("C")


@dataclass(frozen=True)
class _NoAlgorithm:
    """(pass --algo to see and set the algorithm's hyperparameters)"""


@dataclass
class TrainArgs(Generic[C]):
    """Train an offline RL algorithm: `offrl train --algo {dt,cql,bc,pbc} --dataset SOURCE`.
    Runs go to runs/<dataset>/<algo>/<seed>-<time>/ (config.yaml, metrics.jsonl, summary.json,
    TensorBoard events, checkpoints/). Add `--algo X --help` for X's hyperparameters."""

    run: RunConfig[C]
    """Run settings."""
    config: str | None = None
    """YAML run config (see experiments/configs/); flags given here override its keys."""
    resume: str | None = None
    """Continue a run exactly: its folder (newest checkpoint) or a checkpoint file."""
    progress: bool = True
    """Show a progress bar (ETA, last loss, last evaluation score)."""


def _preparse(argv: Sequence[str]) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    for flag in ("--algo", "--config", "--resume"):
        pre.add_argument(flag, default=None)
    return pre.parse_known_args(list(argv))[0]


def _base_config(pre: argparse.Namespace) -> RunConfig:
    """The defaults flags are parsed against (checkpoint config, YAML, or field defaults)."""
    from offrl.checkpoint import load_checkpoint, resolve_checkpoint
    from offrl.config import ConfigError, from_dict, load_yaml, replace

    if pre.resume is not None:
        if pre.config is not None:
            raise ConfigError("--resume continues a run with its saved config; drop --config")
        ckpt = resolve_checkpoint(pre.resume)
        return from_dict(load_checkpoint(ckpt)["run_config"], f"{ckpt} run_config")
    base = load_yaml(pre.config) if pre.config is not None else None
    if base is None:
        return RunConfig(algo=pre.algo or "", algo_config=None if pre.algo else _NoAlgorithm())
    if pre.algo and pre.algo != base.algo:
        base = replace(base, algo=pre.algo)
    return base


def main(argv: Sequence[str], prog: str) -> int:
    from offrl.checkpoint import CheckpointError
    from offrl.config import ConfigError
    from offrl.datasets import DatasetError

    try:
        base = _base_config(_preparse(argv))
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    algo_cfg_type = type(base.algo_config)
    args = tyro.cli(TrainArgs[algo_cfg_type], args=list(argv), prog=prog,  # type: ignore[valid-type]
                    default=TrainArgs(run=base), config=(tyro.conf.OmitArgPrefixes,))
    if isinstance(args.run.algo_config, _NoAlgorithm):
        print(f"error: pass --algo (dt | cql | bc | pbc); `{prog} --algo X --help` lists X's "
              f"options", file=sys.stderr)
        return 2
    if not args.run.dataset:
        print("error: pass --dataset SOURCE (see `offrl datasets list`)", file=sys.stderr)
        return 2

    from offrl.trainer import NonFiniteMetricError, Trainer

    try:
        trainer = Trainer(args.run, resume=args.resume, progress=args.progress)
        print(f"run folder: {trainer.run_dir}", file=sys.stderr)
        result = trainer.run()
    except NonFiniteMetricError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    final = {k: v for k, v in result.final_eval.items() if not k.startswith("time/")}
    print(json.dumps({"run_dir": str(result.run_dir), "step": result.step,
                      "best_score": result.best_score, "final_eval": final}, indent=1))
    return 0
