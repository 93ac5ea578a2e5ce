"""`offrl compare --report-only`: rebuild the reports of an earlier comparison from its folder.

Everything a report shows is read back from disk (plan.json, the run folders, the per-run
records), so report changes (a new statistic, a fixed table) can be applied to a finished
comparison without training again, even after the configs it named were renamed: the runs'
commands and settings come from plan.json, not from the suite or configs of today.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from offrl.compare import (
    PLAN_FILE,
    PLAN_FORMAT,
    CompareError,
    DatasetPlan,
    Run,
    Settings,
    run_log_files,
)


def _option(words: list[str], flag: str) -> str | None:
    """The value after `flag` in a command line, None when absent."""
    return words[words.index(flag) + 1] if flag in words[:-1] else None


def _settings(data: dict[str, Any]) -> Settings:
    tuples = {"algos", "config", "target_returns"}
    return Settings(**{k: tuple(v) if k in tuples and v is not None else v
                       for k, v in data.items()})


def load_plan(out: Path) -> tuple[dict[str, Any], list[DatasetPlan], list[Run]]:
    """plan.json of a comparison folder -> (the plan, its dataset plans, its runs)."""
    path = out / PLAN_FILE
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CompareError(f"--report-only: '{out}' has no {PLAN_FILE}; it is not an offrl "
                           f"compare output") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CompareError(f"--report-only: cannot read '{path}': {exc}") from exc
    if plan.get("format") != PLAN_FORMAT:
        raise CompareError(f"'{path}': format {plan.get('format')!r}, expected {PLAN_FORMAT!r}")
    plans = [DatasetPlan(d["name"], d["dataset"], d["env"], _settings(d["settings"]))
             for d in plan["datasets"]]
    suite = plan.get("suite") is not None
    runs = []
    for r in plan["runs"]:
        words = list(r["command"])
        steps = _option(words, "--steps")
        if steps is None:
            raise CompareError(f"'{path}': run {r['dataset']}/{r['algo']}/seed{r['seed']} "
                               f"has no --steps in its command")
        folder = out / r["dataset"] if suite else out
        runs.append(Run(r["dataset"], r["algo"], int(r["seed"]), int(steps), words,
                        Path(r["run_dir"]), *run_log_files(folder, r["algo"], int(r["seed"])),
                        eval_every=int(_option(words, "--eval-every") or 0),
                        config=_option(words, "--config")))
    return plan, plans, runs


def rebuild_reports(out: Path) -> Path:
    """Rewrite report.md, results.json and the curves of every dataset (and of the suite)
    from `out`'s plan and run folders; returns the top report's path."""
    from offrl import compare_report

    out = out.resolve()
    plan, plans, runs = load_plan(out)
    argv = [str(a) for a in plan.get("argv", [])]
    threads = int(_option(argv, "--threads") or 1)
    parallel = int(_option(argv, "--parallel") or 0) or None
    is_suite = plan.get("suite") is not None
    sections = [compare_report.build_section(
        p, [r for r in runs if r.dataset == p.name],
        compare_report.describe_dataset(p.dataset, p.env)) for p in plans]
    unfinished = any(r["status"] in ("interrupted", "not run", "running")
                     for s in sections for r in s["runs"])
    ctx = compare_report.context(argv, parallel or 1, threads, None, interrupted=unfinished)
    for p, section in zip(plans, sections, strict=True):
        compare_report.write_section(section, ctx, out / p.name if is_suite else out)
    if is_suite:
        suite_file = Path(plan["suite"])
        text = suite_file.read_text(encoding="utf-8") if suite_file.is_file() else None
        compare_report.write_suite(sections, ctx, out, text)
    return out / "report.md"
