"""The peer check's report: per-dataset seed statistics, the JSON document and its markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.peer.algos import ALGOS, PeerAlgo


def stats(values: list[float | None]) -> dict[str, float | int | None]:
    """`seed_stats` (the compare report's), with std 0 for a single run."""
    from offrl.compare_report import seed_stats

    s = seed_stats(values)
    std = s["std"] if s["n"] != 1 else 0.0
    return {"n": s["n"], "mean": s["mean"], "std": std}


def dataset_entry(algo: PeerAlgo, name: str, source: str, export: Path,
                  d3rlpy_runs: list[dict[str, Any]], offrl_runs: list[dict[str, Any]]
                  ) -> dict[str, Any]:
    return {
        "name": name, "source": source, "export": str(export),
        "d3rlpy": {"runs": d3rlpy_runs,
                   **{k: stats([r.get(k) for r in d3rlpy_runs]) for k in algo.stats}},
        "offrl": {"runs": offrl_runs,
                  **{k: stats([r.get(k) for r in offrl_runs]) for k in algo.stats}},
    }


def fmt(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "not run yet"
    return f"{s['mean']:.1f} ± {s['std']:.1f} (n={s['n']})"


def _diag_header(algo: PeerAlgo) -> tuple[list[str], list[str]]:
    """(column titles, stat keys) of the diagnostics table, d3rlpy before offrl per value."""
    if algo.name == "bc":  # the original report's columns
        return (["d3rlpy loss", "offrl loss", "d3rlpy action MSE", "offrl action MSE"],
                ["train_loss_second_half", "action_mse"])
    titles = {"td_loss_second_half": "TD loss", "cql_gap_second_half": "CQL gap",
              "sac_alpha_last": "SAC alpha", "action_mse": "action MSE",
              "train_loss_second_half": "loss"}
    keys = [*algo.diagnostics, *(() if algo.sequence else ("action_mse",))]
    return [f"{side} {titles.get(k, k)}" for k in keys for side in ("d3rlpy", "offrl")], keys


def markdown(report: dict[str, Any]) -> str:
    algo = ALGOS[report["algo"]]
    a = algo.label
    p = report["protocol"]
    lines = [
        f"# Peer check: d3rlpy {a} vs offrl {a}, {report.get('env', 'hopper')}",
        "",
        f"Final D4RL-normalized score after {report['steps']} gradient steps, mean ± sample "
        f"std over seeds; both scored by offrl's evaluator: {p['episodes']} episodes on "
        f"{p['num_envs']} envs of {p['env_id']}, episode j reset with seed "
        f"{p['eval_seed']} + j for every run.",
        "",
        f"| dataset | d3rlpy {a} | offrl {a} | d3rlpy raw return | offrl raw return |",
        "|---|---|---|---|---|",
    ]
    if "offrl_precision" in report:
        lines[3:3] = ["", f"offrl trained with precision {report['offrl_precision']}; d3rlpy "
                      f"in fp32."]
    for d in report["datasets"]:
        lines.append(f"| {d['name']} | {fmt(d['d3rlpy']['normalized_score'])} | "
                     f"{fmt(d['offrl']['normalized_score'])} | "
                     f"{fmt(d['d3rlpy']['return_mean'])} | {fmt(d['offrl']['return_mean'])} |")
    lines += ["", f"The same final policies over {report['long_episodes']} episodes (env seeds "
              f"{p['eval_seed']} + j, j < {report['long_episodes']}; less evaluation noise):",
              "", f"| dataset | d3rlpy {a} | offrl {a} |", "|---|---|---|"]
    for d in report["datasets"]:
        lines.append(f"| {d['name']} | {fmt(d['d3rlpy']['normalized_score_long'])} | "
                     f"{fmt(d['offrl']['normalized_score_long'])} |")
    if algo.sequence:  # every target return the suite evaluates at (the headline: the first)
        targets = [f"{t:g}" for t in p["targets"]]
        lines += ["", "Final normalized score at each target return (the tables above use "
                  f"the first, {targets[0]}, as the study does):", "",
                  "| dataset | target | d3rlpy | offrl |", "|---|---|---|---|"]
        for d in report["datasets"]:
            for t in targets:
                cells = [fmt(stats([r.get("normalized_score_by_target", {}).get(t)
                                    for r in d[side]["runs"]])) for side in ("d3rlpy", "offrl")]
                lines.append(f"| {d['name']} | {t} | " + " | ".join(cells) + " |")
    titles, keys = _diag_header(algo)
    lines += ["", algo.diagnostics_text, "",
              "| dataset | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for d in report["datasets"]:
        cells = [d[side][k] for k in keys for side in ("d3rlpy", "offrl")]
        lines.append(f"| {d['name']} | " + " | ".join(
            f"{c['mean']:.4f} ± {c['std']:.4f}" if c["n"] else "-" for c in cells) + " |")
    lines += ["", "Per run (final normalized score; offrl runs come from the study where "
              "it finished them, else from this script with the suite's exact command; train s: "
              "seconds of gradient steps, evaluations excluded, measured while the machine ran "
              "other jobs, so only roughly comparable):", "",
              "| dataset | seed | d3rlpy | d3rlpy train s | offrl | offrl train s | offrl run |",
              "|---|---|---|---|---|---|---|"]
    for d in report["datasets"]:
        d3 = {r["seed"]: r for r in d["d3rlpy"]["runs"]}
        off = {r["seed"]: r for r in d["offrl"]["runs"]}
        for seed in sorted(set(d3) | set(off)):
            r, o = d3.get(seed, {}), off.get(seed, {})
            cells = [f"{r['normalized_score']:.1f}" if r else "-",
                     f"{r['train_wall_s']:.0f}" if r else "-",
                     f"{o['normalized_score']:.1f}" if o else "-",
                     f"{o['train_time_s']:.0f}" if o.get("train_time_s") else "-",
                     o.get("source", "-")]
            lines.append(f"| {d['name']} | {seed} | " + " | ".join(cells) + " |")
    if report.get("differences"):
        lines += ["", "Remaining differences between the two configurations:", "",
                  *[f"- {n}" for n in report["differences"]]]
    lines += ["", "Commands:", "", "```", *report["commands"], "```", "",
              f"Versions: {report['versions']}", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> None:
    """`out` (JSON, atomically) and the markdown beside it (same name, .md)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    out.with_suffix(".md").write_text(markdown(report))
