"""`offrl compare`: algorithms x seeds on a dataset (or a YAML suite of datasets), one report."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import tyro

from offrl.cli import parse


@dataclass
class CompareArgs:
    """Compare offline RL algorithms: every algorithm x seed trains as its own `offrl train`
    process (up to --parallel at once) under ONE evaluation protocol (same cadence, episodes,
    env seeds and target returns), then OUT/report.md (final and best score, mean ± std over
    seeds, raw return, wall time and updates/s), learning-curve PNGs and results.json.
    Example: offrl compare --dataset minari:keytodoor/random-1k-v0 --algos dt,cql,bc,pbc
    --seeds 3 --steps 5000 --config 'experiments/configs/demo-keytodoor-{algo}.yaml'"""

    dataset: str | None = None
    """Dataset source: minari:<id> | d4rl:<name> | path (as for `offrl train`)."""
    suite: str | None = None
    """YAML suite of datasets instead of --dataset (see experiments/suites/); flags given
    here override the suite's settings for every dataset."""
    algos: tuple[str, ...] | None = None
    """Algorithms, comma- or space-separated (default: dt,cql,bc,pbc)."""
    seeds: int | None = None
    """Training seeds per algorithm: first-seed, first-seed + 1, ... (default: 3)."""
    first_seed: int | None = None
    """The first training seed (default: 0)."""
    steps: int | None = None
    """Gradient steps per run (default: each config's total_steps, else 100000)."""
    env: str | None = None
    """Gymnasium id of the evaluation env (default: from the dataset)."""
    config: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Per-algo YAML config, repeatable: ALGO=PATH, or a template with {algo} such as
    'experiments/configs/hopper-medium-{algo}.yaml' (ALGO=PATH wins). Without one an
    algorithm uses its defaults. The protocol flags below override the configs' evaluation
    keys."""
    eval_every: int | None = None
    """Evaluate every this many steps, and always after the last one (default: a tenth of
    the run's steps; 0: only at the end)."""
    eval_episodes: int | None = None
    """Episodes per evaluation (and per target return) (default: 10)."""
    eval_envs: int | None = None
    """Envs stepped in lockstep per evaluation (default: min(10, eval-episodes))."""
    eval_seed: int | None = None
    """Evaluation episode j resets its env with seed eval-seed + j in every run (default:
    1000000, far from data-collection seeds)."""
    target_returns: tuple[float, ...] | None = None
    """Target returns for return-conditioned algorithms (default: each run's config, else
    the env's defaults); the first one is scored."""
    device: str | None = None
    """Torch device for every run (default: each config's, else auto)."""
    out: str | None = None
    """Output folder (default: runs/compare/<dataset or suite>-<time>)."""
    parallel: int | None = None
    """Runs at once (default: CPU cores // threads, at least 1)."""
    threads: int = 1
    """Torch (and OpenMP/BLAS) threads per run."""
    force: bool = False
    """Replace an existing output folder made by an earlier `offrl compare`."""
    resume: bool = False
    """Continue an existing output folder: runs that finished with the same command are kept,
    unfinished ones continue from their newest checkpoint (exact resume), the rest start
    again."""
    progress: bool = True
    """Show live per-run status lines (plain lines when not on a terminal)."""
    status_every: float = 30.0
    """Seconds between status blocks when not on a terminal."""
    report_only: bool = False
    """Rebuild the reports of the earlier comparison in --out from its plan.json and run
    folders (e.g. after a report change); trains nothing and takes no other option."""


def _report_only(args: CompareArgs) -> int:
    from offrl.compare import CompareError
    from offrl.compare_rebuild import rebuild_reports

    if args.out is None:
        raise CompareError("--report-only needs --out: the folder of an earlier comparison")
    if args.dataset is not None or args.suite is not None or args.resume or args.force:
        raise CompareError("--report-only takes only --out (the plan in it says the rest)")
    print(f"report: {rebuild_reports(Path(args.out))}", file=sys.stderr)
    return 0


def main(argv: Sequence[str], prog: str) -> int:
    from offrl.compare import (
        DEFAULTS,
        CompareError,
        CompareOptions,
        DatasetPlan,
        Settings,
        load_suite,
        run_compare,
        slug,
        split_algos,
    )

    args = parse(CompareArgs, argv, prog)
    try:
        if args.report_only:
            return _report_only(args)
        if (args.dataset is None) == (args.suite is None):
            raise CompareError("pass either --dataset SOURCE or --suite FILE.yaml")
        if args.threads < 1:
            raise CompareError(f"--threads must be >= 1, got {args.threads}")
        if args.parallel is not None and args.parallel < 1:
            raise CompareError(f"--parallel must be >= 1, got {args.parallel}")
        cli = Settings(
            algos=split_algos(args.algos) if args.algos is not None else None,
            seeds=args.seeds, first_seed=args.first_seed, steps=args.steps,
            config=args.config or None, eval_every=args.eval_every,
            eval_episodes=args.eval_episodes, eval_envs=args.eval_envs, eval_seed=args.eval_seed,
            target_returns=args.target_returns, device=args.device)
        if args.suite is not None:
            if args.env is not None:
                raise CompareError("--env applies to --dataset; a suite names each dataset's "
                                   "env")
            plans = load_suite(args.suite, cli)
            name = Path(args.suite).stem
        else:
            assert args.dataset is not None
            plans = [DatasetPlan(slug(args.dataset), args.dataset, args.env,
                                 cli.over(DEFAULTS))]
            name = slug(args.dataset).replace("/", "-")
        out = Path(args.out) if args.out else (
            Path("runs") / "compare" / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        parallel = args.parallel or max(1, (os.cpu_count() or 1) // args.threads)
        opts = CompareOptions(out=out, parallel=parallel, threads=args.threads, force=args.force,
                              resume=args.resume, progress=args.progress,
                              status_every=args.status_every, argv=list(argv),
                              suite=args.suite)
        return run_compare(plans, opts)
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
