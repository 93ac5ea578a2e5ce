"""`offrl compare` results: read the runs back from disk, aggregate over seeds, write
report.md, results.json and learning-curve PNGs.

Everything is recomputed from what the runs wrote (metrics.jsonl eval rows, summary.json,
the orchestrator's per-run record), so a report can be rebuilt from an output folder
(`offrl compare --report-only --out DIR`, `offrl.compare_rebuild`).

Statistics (documented in every report):
- score: the env's success rate where it reports one (Key-to-Door), else the D4RL
  normalized score where reference returns are known, else the raw mean return; the same
  metric for every algorithm of a dataset. For return-conditioned policies evaluated at
  several targets, the first target's (`eval/<metric>` mirrors it; what the trainer ranks by).
- final: the evaluation after the last gradient step; last-3: the mean of a run's last three
  evaluations (the final one included), less sensitive to one unlucky checkpoint (10-episode
  evaluations of consecutive checkpoints can differ by tens of points); best: a run's highest
  evaluation (chosen with online evaluations, so optimistic for an offline method).
- mean +/- std over seeds, std the sample standard deviation (n - 1; none for one seed),
  over the runs that finished only; failed runs are listed separately.
- learning curves: at the evaluation steps every finished seed of the algorithm has (so
  each point averages the same runs; steps only some seeds have are listed as dropped).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_FORMAT = "offrl-compare-results/1"
METRIC_LABELS = {
    "success_rate": "success rate (%)",
    "normalized_score": "normalized score",
    "return_mean": "return",
}
LABELS = {"dt": "DT", "cql": "CQL", "bc": "BC", "pbc": "%BC"}
LOG_TAIL_LINES = 25
LAST_EVALS = 3  # evaluations averaged by the "last-3" statistic


# ---- reading runs ----------------------------------------------------------------------------


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _reward_setting(run_dir: Path) -> str | None:
    """The run config's `reward` (dense | delayed) from the run's config.yaml, if any."""
    import yaml

    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return str(config.get("reward", "dense")) if isinstance(config, dict) else None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a line cut short by a killed process is skipped, and the strings
    the logger writes for NaN/inf become floats again."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows.append({k: float(v) if isinstance(v, str) else v for k, v in row.items()})
    return rows


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _trainer_alive(run: Any) -> bool:
    from offrl.compare_resume import live_runs

    return bool(live_runs([run]))


def read_run(run: Any) -> dict[str, Any]:
    """One run (an `offrl.compare.Run`) as a plain dict: status, timings, its eval curve."""
    summary = _json(run.run_dir / "summary.json")
    record = _json(run.record)
    evals = [r for r in read_rows(run.run_dir / "metrics.jsonl") if "eval/return_mean" in r]
    code = record.get("returncode") if record else None
    if record is None:
        status = "not run"
    elif record.get("interrupted"):
        status = "interrupted"
    elif code is None and _trainer_alive(run):  # a report rebuilt while the comparison runs
        status = "running"
    elif code == 0 and summary is not None and summary.get("status") == "finished" \
            and summary.get("step") == run.total_steps:
        status = "finished"
    elif summary is not None and summary.get("status") in ("diverged", "failed"):
        status = summary["status"]
    else:
        status = "failed"
    out: dict[str, Any] = {
        "dataset": run.dataset, "algo": run.algo, "seed": run.seed, "status": status,
        "returncode": code, "error": summary.get("error") if summary else None,
        "resumed": bool(record.get("resumed")) if record else False,
        "command": shlex.join(run.command), "config": run.config, "run_dir": str(run.run_dir),
        "log": str(run.log), "total_steps": run.total_steps, "eval_every": run.eval_every,
        "steps_done": summary.get("step") if summary else None,
        "wall_s": record.get("wall_s") if record else None,
        "train_wall_s": summary.get("wall_time_s") if summary else None,
        "train_time_s": summary.get("train_time_s") if summary else None,
        "updates_per_s": summary.get("updates_per_s") if summary else None,
        "eval_targets": summary.get("eval_targets") if summary else None,
        "env_id": summary.get("env_id") if summary else None,
        "reward": _reward_setting(run.run_dir),
        "final_eval": {k: v for k, v in (summary or {}).get("final_eval", {}).items()
                       if k.startswith("eval/")},
        "eval_rows": evals,
        "log_tail": None if status == "finished" else log_tail(run.log),
    }
    return out


def pick_metric(runs: Sequence[dict[str, Any]]) -> str:
    """success_rate if the env reports success, else normalized_score, else return_mean."""
    rows = [row for r in runs for row in r["eval_rows"]]
    for metric in ("success_rate", "normalized_score"):
        if any(f"eval/{metric}" in row for row in rows):
            return metric
    return "return_mean"


def score_run(run: dict[str, Any], metric: str) -> None:
    """Add the run's curve (step, score, return) and final/best scores, in place."""
    rows = [r for r in run.pop("eval_rows") if f"eval/{metric}" in r]
    run["curve"] = {"step": [int(r["step"]) for r in rows],
                    "score": [float(r[f"eval/{metric}"]) for r in rows],
                    "return_mean": [float(r["eval/return_mean"]) for r in rows]}
    done = run["status"] == "finished" and rows and int(rows[-1]["step"]) == run["total_steps"]
    run["final_score"] = float(rows[-1][f"eval/{metric}"]) if done else None
    run["final_return"] = float(rows[-1]["eval/return_mean"]) if done else None
    run["last_score"] = (float(np.mean(run["curve"]["score"][-LAST_EVALS:])) if done
                         else None)
    if rows:
        i = int(np.argmax(run["curve"]["score"]))  # first of equal maxima: the earliest step
        run["best_score"], run["best_step"] = run["curve"]["score"][i], run["curve"]["step"][i]
    else:
        run["best_score"] = run["best_step"] = None


# ---- aggregation -----------------------------------------------------------------------------


def seed_stats(values: Sequence[float | None]) -> dict[str, Any]:
    """mean and sample std (n - 1; None below two values) of the values that are not None."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    return {"mean": float(np.mean(xs)) if n else None,
            "std": float(np.std(xs, ddof=1)) if n >= 2 else None, "n": n, "values": xs}


def mean_curve(curves: Sequence[dict[str, list]], key: str = "score") -> dict[str, Any]:
    """Mean and sample std over runs at the steps every run evaluated."""
    if not curves:
        return {"step": [], "mean": [], "std": [], "n": 0, "dropped_steps": []}
    common = sorted(set.intersection(*(set(c["step"]) for c in curves)))
    union = sorted(set().union(*(set(c["step"]) for c in curves)))
    # (runs, steps) values at the common steps; a run logs one eval row per step
    table = np.array([[dict(zip(c["step"], c[key], strict=True))[s] for s in common]
                      for c in curves], dtype=np.float64).reshape(len(curves), len(common))
    std = table.std(axis=0, ddof=1) if len(curves) >= 2 else np.full(len(common), np.nan)
    return {"step": common, "mean": table.mean(axis=0).tolist(),
            "std": [None if math.isnan(x) else float(x) for x in std],
            "n": len(curves), "dropped_steps": [s for s in union if s not in common]}


def per_target(runs: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Final return and score at each target return of a return-conditioned algorithm's
    finished runs (from summary.json's eval/<target>/... scalars), when it has several."""
    from offrl.evaluator import target_tag

    targets = next((r["eval_targets"] for r in runs if r.get("eval_targets")), None)
    if not targets or len(targets) < 2:
        return []
    out = []
    for target in targets:
        tag = target_tag(target)
        out.append({"target": target, **{
            name: seed_stats([r["final_eval"].get(f"eval/{tag}/{key}") for r in runs])
            for name, key in (("final_return", "return_mean"), ("final_score", metric))}})
    return out


def aggregate(runs: Sequence[dict[str, Any]], algos: Sequence[str],
              metric: str = "normalized_score") -> dict[str, Any]:
    """Per algorithm: final/best score, final return, wall time, updates/s over the finished
    seeds, the mean learning curves, and the final scores per target return."""
    out = {}
    for algo in algos:
        mine = [r for r in runs if r["algo"] == algo]
        ok = [r for r in mine if r["status"] == "finished"]
        out[algo] = {
            "runs": len(mine), "finished": len(ok),
            "final_score": seed_stats([r["final_score"] for r in ok]),
            "last_score": seed_stats([r["last_score"] for r in ok]),
            "best_score": seed_stats([r["best_score"] for r in ok]),
            "final_return": seed_stats([r["final_return"] for r in ok]),
            "wall_s": seed_stats([r["wall_s"] for r in ok]),
            "updates_per_s": seed_stats([r["updates_per_s"] for r in ok]),
            "curve": mean_curve([r["curve"] for r in ok]),
            "return_curve": mean_curve([r["curve"] for r in ok], "return_mean"),
            "per_target": per_target(ok, metric),
        }
    return out


def differences(aggregated: dict[str, Any], level: float = 0.95) -> list[dict[str, Any]]:
    """Every pair of algorithms (in the listed order): the difference of their mean final
    and last-3 scores over seeds with Welch's `level` interval (None below two seeds a side).
    """
    from offrl.stats import welch_interval

    names = list(aggregated)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            out.append({"a": a, "b": b, **{
                key: welch_interval(aggregated[a][key]["values"], aggregated[b][key]["values"],
                                    level)
                for key in ("final_score", "last_score")}})
    return out


# ---- building a dataset's section ------------------------------------------------------------


def describe_dataset(source: str, env: str | None) -> dict[str, Any]:
    """Episodes, steps and returns of the dataset (loading it also checks the source)."""
    import gymnasium as gym

    from offrl.commands.datasets import summarize
    from offrl.compare import CompareError
    from offrl.datasets import DatasetError, load_dataset

    try:
        ds = load_dataset(source, env_id=env)
    except (DatasetError, OSError, ValueError, gym.error.Error) as exc:
        where = f"dataset '{source}'" + (f" with env '{env}'" if env else "")
        raise CompareError(f"{where}: {exc}") from exc
    return summarize(ds)


def build_section(plan: Any, runs: Sequence[Any], description: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    records = [read_run(r) for r in runs]
    metric = pick_metric([r for r in records if r["status"] == "finished"] or records)
    for r in records:
        score_run(r, metric)
    settings = asdict(plan.settings)
    algos = list(settings["algos"])
    targets = {r["algo"]: r["eval_targets"] for r in records if r["eval_targets"]}
    warnings = []
    conditioned = {tuple(r["eval_targets"]) for r in records
                   if r["eval_targets"] and r["eval_targets"] != [None]}
    if len(conditioned) > 1:  # e.g. per-algo configs with their own target_returns
        warnings.append(f"return-conditioned runs were evaluated at different target returns "
                        f"{sorted(conditioned)}; pass --target-returns to compare them alike")
    return {
        "name": plan.name, "dataset": plan.dataset,
        # what the runs evaluated in (a config's env_id applies when --env is not given)
        "env": next((r["env_id"] for r in records if r["env_id"]), None)
        or plan.env or description["env_id"],
        "description": description, "settings": settings, "metric": metric,
        "metric_label": METRIC_LABELS[metric],
        "total_steps": {a: next((r["total_steps"] for r in records if r["algo"] == a), None)
                        for a in algos},
        "eval_every": {a: next((r["eval_every"] for r in records if r["algo"] == a), None)
                       for a in algos},
        "eval_targets": targets,
        "rewards": sorted({r["reward"] for r in records if r["reward"]}),
        "algos": (agg := aggregate(records, algos, metric)), "differences": differences(agg),
        "runs": records, "warnings": warnings,
    }


def context(argv: Sequence[str], parallel: int, threads: int, wall_s: float | None,
            interrupted: bool) -> dict[str, Any]:
    """What every report records about how it was made; wall_s None: not known (a report
    rebuilt later with --report-only)."""
    from offrl.checkpoint import library_versions

    versions = library_versions()
    for name in ("minari", "matplotlib", "mujoco"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # not installed: nothing to record
            pass
    return {"command": shlex.join(["offrl", "compare", *argv]),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "versions": versions, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "parallel": parallel, "threads_per_run": threads,
            "wall_s": wall_s, "interrupted": interrupted}


# ---- writing ---------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _scale(metric: str) -> float:
    return 100.0 if metric == "success_rate" else 1.0


def fmt_stats(stats: dict[str, Any], scale: float = 1.0, digits: int = 1) -> str:
    if stats["mean"] is None:
        return "-"
    text = f"{scale * stats['mean']:.{digits}f}"
    if stats["std"] is not None:
        text += f" ± {scale * stats['std']:.{digits}f}"
    return text


def _num(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{scale * value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _label(algo: str) -> str:
    return LABELS.get(algo, algo)


def plot_curves(section: dict[str, Any], key: str, path: Path) -> Path:
    """Mean over seeds (line) +/- one sample std (band) against the gradient step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scale = _scale(section["metric"]) if key == "curve" else 1.0
    fig = Figure(figsize=(6.4, 4.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for algo, agg in section["algos"].items():
        c = agg[key]
        if not c["step"]:
            continue
        steps, mean = np.array(c["step"]), scale * np.array(c["mean"])
        line, = ax.plot(steps, mean, marker="o", markersize=3,
                        label=f"{_label(algo)} (n={c['n']})")
        if c["n"] >= 2:
            std = scale * np.array(c["std"], dtype=np.float64)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("gradient step")
    ax.set_ylabel(section["metric_label"] if key == "curve" else "return")
    ax.set_title(f"{section['name']}: mean ± std over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def render_section(section: dict[str, Any], ctx: dict[str, Any]) -> str:
    d, s, metric = section["description"], section["settings"], section["metric"]
    scale = _scale(metric)
    digits = 1 if metric != "return_mean" else 2
    label = section["metric_label"]
    ref = (f"; reference returns: random {d['ref_min_score']:g}, expert {d['ref_max_score']:g}"
           if d.get("ref_min_score") is not None else "")
    steps = sorted({v for v in section["total_steps"].values() if v is not None})
    every = sorted({v for v in section["eval_every"].values() if v})
    every_text = (f"every {', '.join(map(str, every))} steps and after the last one" if every
                  else "after the last step only")
    targets = {a: t for a, t in section["eval_targets"].items() if t and t != [None]}
    target_text = ("; return-conditioned policies at target return(s) "
                   + ", ".join(f"{_label(a)} " + " ".join(f"{x:g}" for x in t)
                               for a, t in targets.items())
                   + " (the first one is scored)") if targets else ""
    rows = []
    for algo, agg in section["algos"].items():
        rows.append([_label(algo), fmt_stats(agg["final_score"], scale, digits),
                     fmt_stats(agg["last_score"], scale, digits),
                     fmt_stats(agg["best_score"], scale, digits),
                     fmt_stats(agg["final_return"], 1.0, 2),
                     f"{agg['finished']}/{agg['runs']}", fmt_stats(agg["wall_s"], 1.0, 0),
                     fmt_stats(agg["updates_per_s"], 1.0, 0)])
    main_table = _table(["algo", f"final {label}", f"last-{LAST_EVALS} {label}",
                         f"best {label}", "final return",
                         "seeds finished", "wall s / run", "updates/s"], rows)
    run_rows = []
    for r in section["runs"]:
        best = (f"{_num(r['best_score'], scale, digits)} @ {r['best_step']}"
                if r["best_score"] is not None else "-")
        status = r["status"] + (" (resumed)" if r.get("resumed") else "")
        run_rows.append([_label(r["algo"]), str(r["seed"]), status,
                         _num(r["final_score"], scale, digits),
                         _num(r["last_score"], scale, digits), best,
                         _num(r["final_return"], 1.0, 2), _num(r["wall_s"], 1.0, 0),
                         _num(r["train_time_s"], 1.0, 0), _num(r["updates_per_s"], 1.0, 0),
                         f"`{r['run_dir']}`"])
    run_table = _table(["algo", "seed", "status", "final", f"last-{LAST_EVALS}", "best @ step",
                        "final return",
                        "wall s", "train s", "updates/s", "run folder"], run_rows)
    target_rows = [[_label(a), f"{t['target']:g}", fmt_stats(t["final_return"], 1.0, 2),
                    fmt_stats(t["final_score"], scale, digits)]
                   for a, g in section["algos"].items() for t in g["per_target"]]
    dropped = {a: g["curve"]["dropped_steps"] for a, g in section["algos"].items()
               if g["curve"]["dropped_steps"]}
    failed = [r for r in section["runs"] if r["status"] != "finished"]
    parts = [
        f"# offrl compare: {section['name']}",
        "",
        *_section_banners(section["runs"], ctx["interrupted"]),
        *(f"> Warning: {w}\n" for w in section["warnings"]),
        f"Dataset `{section['dataset']}` ({d['name']}): {d['episodes']} episodes, {d['steps']} "
        f"steps, episode return {d['return_mean']:.3g} ± {d['return_std']:.3g} (min "
        f"{d['return_min']:.3g}, max {d['return_max']:.3g}); evaluation env "
        f"`{section['env']}`{ref}.",
        "",
        *([f"Rewards: {' / '.join(section['rewards'])} (`delayed`: every episode's return "
           f"paid at its last step, in the training data and in the evaluation env alike; "
           f"the returns above are the dataset's own).", ""]
          if section.get("rewards", ["dense"]) != ["dense"] and section.get("rewards") else []),
        f"Protocol (the same for every run): {', '.join(map(str, steps))} gradient steps; "
        f"evaluation {every_text}, "
        f"{s['eval_episodes']} episodes each with env seeds {s['eval_seed']} + j for episode "
        f"j (the same episodes for every algorithm and seed){target_text}. "
        f"Score: {label}.",
        "",
        "## Results",
        "",
        main_table,
        "",
        f"Mean ± sample std (n - 1) over the seeds that finished. final: the evaluation after "
        f"the last gradient step; last-{LAST_EVALS}: the mean of each run's last {LAST_EVALS} "
        f"evaluations (less sensitive to one unlucky checkpoint); best: each run's highest "
        f"evaluation (picked with online "
        f"evaluations, so optimistic for an offline method). wall s: the whole `offrl train` "
        f"process (data loading, training, evaluations, checkpoints); updates/s: gradient "
        f"steps per second of training alone, {ctx['parallel']} run(s) sharing "
        f"{ctx['cpu_count']} cores, {ctx['threads_per_run']} torch thread(s) each.",
        "",
        f"![{label} curves](curves_score.png)",
        "",
        "![return curves](curves_return.png)",
        "",
        "Curves: mean over seeds with a ± std band, at the evaluation steps all finished seeds "
        "share" + (f" (steps dropped: {dropped})" if dropped else "") + ".",
        "",
    ]
    diff_rows = []
    for pair in section.get("differences", []):
        cells = []
        for key in ("final_score", "last_score"):
            cells.append(_interval_text(pair[key], scale, digits))
        diff_rows.append([f"{_label(pair['a'])} - {_label(pair['b'])}", *cells])
    if diff_rows:
        parts += ["## Differences between algorithms", "",
                  _table(["pair", f"final {label}", f"last-{LAST_EVALS} {label}"], diff_rows),
                  "",
                  "Difference of the two algorithms' means over seeds, with Welch's 95% "
                  "interval (unequal variances; assumes normal seed-to-seed variation). * marks "
                  "an interval that excludes 0. With 3 seeds a side the intervals are wide: a "
                  "difference without * is not established either way.", ""]
    if target_rows:
        parts += ["## Return conditioning", "",
                  "Final evaluation at each target return (same episodes), mean ± std over "
                  "seeds:", "",
                  _table(["algo", "target return", "final return", f"final {label}"],
                         target_rows), ""]
    parts += ["## Runs", "", run_table, ""]
    if failed:
        parts += ["## Runs that did not finish", ""]
        for r in failed:
            parts += [f"### {_label(r['algo'])} seed {r['seed']}: {r['status']} "
                      f"(exit code {r['returncode']})", ""]
            if r["error"]:
                parts += [f"Error: {r['error']}", ""]
            parts += [f"Last lines of `{r['log']}`:", "", "```", r["log_tail"] or "(empty)",
                      "```", ""]
    parts += ["## Commands", "", "```", ctx["command"], "```", "", "Each run:", "", "```",
              *(r["command"] for r in section["runs"]), "```", ""]
    parts += _environment(ctx)
    return "\n".join(parts)


def _environment(ctx: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in ctx["versions"].items())
    return ["## Environment", "",
            f"{ctx['date']}; {ctx['platform']}; {ctx['cpu_count']} CPU cores; "
            f"{ctx['parallel']} runs at a time, {ctx['threads_per_run']} torch thread(s) each; "
            + (f"all runs took {ctx['wall_s']:.0f} s." if ctx["wall_s"] is not None else
             "report rebuilt from the run folders with `offrl compare --report-only` (the "
             "whole comparison's wall time is not recorded; each run's is in its table; the "
             "versions below are the rebuild's, each run's checkpoints record its own)."),
            "", f"Versions: {versions}.", ""]


def _results(sections: list[dict[str, Any]], ctx: dict[str, Any],
             tallied: list[dict[str, Any]] | None = None) -> str:
    extra = {"tally": tallied} if tallied else {}
    return json.dumps({"format": RESULTS_FORMAT, "context": ctx, "datasets": sections,
                       **extra}, indent=1, default=str) + "\n"


def _section_banners(runs: Sequence[dict[str, Any]], interrupted: bool) -> list[str]:
    """A dataset's own banners: a suite interrupted in a later dataset leaves this one's
    report without one when all its runs ended."""
    banners = []
    if interrupted and any(r["status"] in ("interrupted", "not run") for r in runs):
        banners.append("> Interrupted: runs stopped before the end are listed as such.\n")
    running = sum(r["status"] == "running" for r in runs)
    if running:
        banners.append(f"> In progress: {running} run(s) still training; this report was "
                       f"rebuilt while the comparison runs.\n")
    return banners


def write_section(section: dict[str, Any], ctx: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    plot_curves(section, "curve", folder / "curves_score.png")
    plot_curves(section, "return_curve", folder / "curves_return.png")
    _write(folder / "results.json", _results([section], ctx))
    _write(folder / "report.md", render_section(section, ctx))


def _interval_text(w: dict[str, Any] | None, scale: float, digits: int) -> str:
    if w is None:
        return "-"
    star = " *" if w["low"] > 0 or w["high"] < 0 else ""
    return (f"{w['diff'] * scale:+.{digits}f} [{w['low'] * scale:+.{digits}f}, "
            f"{w['high'] * scale:+.{digits}f}]{star}")


def _pair_interval(section: dict[str, Any], a: str, b: str, stat: str
                   ) -> dict[str, Any] | None:
    """a - b of one dataset's `stat` with its interval (from the section's differences,
    flipped when the section lists b - a); None when not computed (fewer than 2 seeds)."""
    for pair in section.get("differences", []):
        if (pair["a"], pair["b"]) == (a, b):
            return pair[stat]
        if (pair["a"], pair["b"]) == (b, a):
            w = pair[stat]
            return None if w is None else {**w, "diff": -w["diff"], "low": -w["high"],
                                           "high": -w["low"]}
    return None


def _pair_cell(section: dict[str, Any], a: str, b: str, stat: str) -> str:
    """a - b of one dataset's `stat` with its interval, as a table cell."""
    scale, digits = _scale(section["metric"]), 1 if section["metric"] != "return_mean" else 2
    return _interval_text(_pair_interval(section, a, b, stat), scale, digits)


def tally(sections: Sequence[dict[str, Any]], algos: Sequence[str]) -> list[dict[str, Any]]:
    """For every pair of algorithms, over the datasets that ran both: in which the 95%
    interval of a - b lies above 0 (a established above b), below 0, or contains it; those
    without an interval (fewer than 2 finished seeds a side) are listed as `no_interval`."""
    out = []
    for i, a in enumerate(algos):
        for b in algos[i + 1:]:
            row: dict[str, Any] = {"a": a, "b": b}
            for stat in ("final_score", "last_score"):
                counts = {"a_above": [], "b_above": [], "not_established": [],
                          "no_interval": []}
                for s in sections:
                    if a not in s["algos"] or b not in s["algos"]:
                        continue  # a dataset the suite did not run both on
                    w = _pair_interval(s, a, b, stat)
                    key = ("no_interval" if w is None else "a_above" if w["low"] > 0
                           else "b_above" if w["high"] < 0 else "not_established")
                    counts[key].append(s["name"])
                row[stat] = counts
            out.append(row)
    return out


def _tally_table(rows: list[dict[str, Any]]) -> str:
    def cell(names: list[str]) -> str:
        return str(len(names)) + (f" ({', '.join(names)})" if names else "")

    stats = (("final_score", "final"), ("last_score", f"last-{LAST_EVALS}"))
    keys = ["a_above", "b_above", "not_established"]
    if any(r[stat]["no_interval"] for r in rows for stat, _ in stats):
        keys.append("no_interval")
    body = [[f"{_label(r['a'])} vs {_label(r['b'])}", label, *(cell(r[stat][k]) for k in keys)]
            for r in rows for stat, label in stats]
    titles = {"a_above": "first above", "b_above": "second above",
              "not_established": "not established", "no_interval": "no interval"}
    return _table(["pair", "score", *(titles[k] for k in keys)], body)


def write_suite(sections: list[dict[str, Any]], ctx: dict[str, Any], out: Path,
                suite_text: str | None = None) -> None:
    """Top-level report of a suite: one row per dataset, one column per algorithm (final
    score, mean ± std over seeds), linking each dataset's own report."""
    algos = list(dict.fromkeys(a for s in sections for a in s["algos"]))

    def table(stat: str) -> str:
        rows = []
        for s in sections:
            scale, digits = _scale(s["metric"]), 1 if s["metric"] != "return_mean" else 2
            cells = []
            for a in algos:
                agg = s["algos"].get(a)
                cell = fmt_stats(agg[stat], scale, digits) if agg else "not run"
                if agg and agg["finished"] < agg["runs"]:
                    cell += f" ({agg['finished']}/{agg['runs']} seeds)"
                cells.append(cell)
            if versus:
                cells.append(_pair_cell(s, *versus, stat))
            steps = "/".join(str(v) for v in dict.fromkeys(s["total_steps"].values()) if v)
            rows.append([f"[{s['name']}]({s['name']}/report.md)", s["metric_label"], steps,
                         *cells])
        extra = [f"{_label(versus[0])} - {_label(versus[1])} (95%)"] if versus else []
        return _table(["dataset", "score", "steps", *(_label(a) for a in algos), *extra], rows)

    # The question the suite is run for: sequence modelling against TD learning.
    versus = ("dt", "cql") if {"dt", "cql"} <= set(algos) else None

    text = "\n".join([
        "# offrl compare: suite", "",
        "> Interrupted: some runs were stopped before the end.\n" if ctx["interrupted"] else "",
        "Final score after the last gradient step, mean ± sample std over seeds (finished "
        "runs); each dataset's report has best scores, raw returns, timings, learning curves "
        "and the exact commands.", "",
        table("final_score"), "",
        *([f"{_label(versus[0])} - {_label(versus[1])}: the difference of their means with "
           f"Welch's 95% interval, * where it excludes 0 (each dataset's report has every "
           f"pair).", ""] if versus else []),
        f"Mean of each run's last {LAST_EVALS} evaluations (the final one included), mean ± "
        f"sample std over seeds: less sensitive to one unlucky checkpoint.", "",
        table("last_score"), "",
        *(["## Tally over the datasets", "",
           "For each pair of algorithms, the datasets where Welch's 95% interval of the "
           "difference of their mean scores lies above 0 (the first established above the "
           "second), below 0, or contains 0 (not established either way with these seeds).",
           "", _tally_table(tallied), ""] if (tallied := tally(sections, algos)) else []),
        "## Command", "", "```", ctx["command"], "```", "",
        *(["## Suite file", "", "```yaml", suite_text.rstrip(), "```", ""] if suite_text else []),
        *_environment(ctx)])
    _write(out / "results.json", _results(sections, ctx, tallied))
    _write(out / "report.md", text)
