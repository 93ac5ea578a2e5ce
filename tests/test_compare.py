"""`offrl compare`: a real end-to-end comparison (subprocesses, one run diverging on purpose),
the numbers of results.json recomputed naively from each run's metrics.jsonl, --resume,
output-folder refusal, aggregation against hand-computed values, and suite parsing."""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

import pytest

from offrl.cli import main
from offrl.compare import (
    DEFAULTS,
    PLAN_FILE,
    CompareError,
    DatasetPlan,
    MetricsTail,
    Run,
    Settings,
    _start,
    _write_record,
    config_paths,
    finished_earlier,
    live_runs,
    load_suite,
    plan_runs,
    prepare_out,
    resume_point,
    split_algos,
    status_line,
)
from offrl.compare_report import aggregate, mean_curve, pick_metric, score_run, seed_stats
from offrl.config import RunConfig, dump_yaml

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "experiments" / "suites"
LINEAR = "tests.trainer_helpers:LinearBC"  # test double with a NaN switch


def _tiny_configs(folder: Path) -> str:
    """Tiny per-algo YAML configs (wiring, not learning); returns the {algo} template."""
    from offrl.algorithms.bc import BCConfig
    from offrl.algorithms.dt import DTConfig
    from tests.trainer_helpers import LinearBCConfig

    folder.mkdir(parents=True, exist_ok=True)
    configs = {
        "bc": RunConfig(algo="bc", algo_config=BCConfig(batch_size=8, hidden=(16,))),
        "dt": RunConfig(algo="dt", algo_config=DTConfig(batch_size=8, context=4, embed_dim=16,
                                                        num_layers=1, num_heads=1)),
    }
    for algo, cfg in configs.items():
        (folder / f"{algo}.yaml").write_text(dump_yaml(cfg))
    nan = RunConfig(algo=LINEAR, algo_config=LinearBCConfig(batch_size=8, nan_at_step=4))
    (folder / "nan.yaml").write_text(dump_yaml(nan))
    return str(folder / "{algo}.yaml")


def _suite(path: Path, data: Path, template: str, nan_config: Path | None) -> Path:
    import yaml

    entries = [{"name": "main", "dataset": str(data), "algos": ["bc", "dt"], "seeds": 2,
                "config": template}]
    if nan_config is not None:  # a second entry: one LinearBC run that diverges
        entries.append({"name": "nan", "dataset": str(data), "algos": [LINEAR], "seeds": 1,
                        "config": [f"{LINEAR}={nan_config}"]})
    path.write_text(yaml.safe_dump({"steps": 6, "eval_every": 3, "eval_episodes": 2,
                                    "datasets": entries}))
    return path


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> dict:
    """One real suite: bc and dt x 2 seeds on a tiny Key-to-Door dataset, and a LinearBC run
    that diverges (5 `offrl train` processes)."""
    from offrl.datasets.collect import collect_dataset

    root = tmp_path_factory.mktemp("compare")
    data, _ = collect_dataset("keytodoor/tiny-v0", "offrl/KeyToDoor-v0", "random", 30, seed=0,
                              root=root / "minari", progress=False)
    template = _tiny_configs(root / "configs")
    suite = _suite(root / "suite.yaml", data, template, root / "configs" / "nan.yaml")
    out = root / "out"
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", str(REPO))  # the children import the tests' LinearBC
    try:
        code = main(["compare", "--suite", str(suite), "--parallel", "5", "--out", str(out),
                     "--no-progress"])
    finally:
        mp.undo()
    # read now: the --resume test rewrites the reports later
    return {"code": code, "out": out, "data": data, "template": template, "root": root,
            "results": json.loads((out / "results.json").read_text()),
            "main": json.loads((out / "main" / "results.json").read_text()),
            "report": (out / "report.md").read_text(),
            "main_report": (out / "main" / "report.md").read_text(),
            "nan_report": (out / "nan" / "report.md").read_text()}


@pytest.mark.slow
def test_end_to_end_numbers_match_the_runs(comparison) -> None:
    out = comparison["out"]
    assert comparison["code"] == 1  # the diverged run makes the comparison fail ...
    assert (out / PLAN_FILE).is_file()
    for folder in (out / "main", out / "nan"):
        for name in ("report.md", "results.json", "curves_score.png", "curves_return.png"):
            assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    (section,) = comparison["main"]["datasets"]
    assert section["metric"] == "success_rate"  # Key-to-Door reports success
    assert section["description"]["episodes"] == 30
    assert [s["name"] for s in comparison["results"]["datasets"]] == ["main", "nan"]

    for algo in ("bc", "dt"):  # ... but every other run finished and is reported
        runs = [r for r in section["runs"] if r["algo"] == algo]
        assert [r["status"] for r in runs] == ["finished", "finished"]
        curves, finals, bests, returns = [], [], [], []
        for r in runs:
            assert f"--eval-seed {1_000_000}" in r["command"]  # the same episodes for all
            rows = [json.loads(line) for line in
                    (Path(r["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
            evals = [row for row in rows if "eval/success_rate" in row]
            assert [row["step"] for row in evals] == [3, 6]
            curves.append([row["eval/success_rate"] for row in evals])
            finals.append(evals[-1]["eval/success_rate"])
            bests.append(max(curves[-1]))
            returns.append(evals[-1]["eval/return_mean"])
            summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
            assert r["updates_per_s"] == summary["updates_per_s"]
            assert r["wall_s"] > summary["wall_time_s"] > 0  # the process outlives the loop
        agg = section["algos"][algo]
        assert agg["final_score"]["mean"] == pytest.approx(statistics.mean(finals))
        assert agg["final_score"]["std"] == pytest.approx(statistics.stdev(finals))
        assert agg["best_score"]["mean"] == pytest.approx(statistics.mean(bests))
        assert agg["final_return"]["mean"] == pytest.approx(statistics.mean(returns))
        assert agg["curve"]["step"] == [3, 6]
        for i in range(2):
            column = [c[i] for c in curves]
            assert agg["curve"]["mean"][i] == pytest.approx(statistics.mean(column))
            assert agg["curve"]["std"][i] == pytest.approx(statistics.stdev(column))
    report = comparison["main_report"]
    assert "seeds finished" in report and "| BC | " in report and "| DT | " in report
    assert "offrl compare --suite" in report and "-m offrl.cli train --algo dt" in report
    assert "torch 2." in report  # library versions

    (bad,) = comparison["results"]["datasets"][1]["runs"]
    assert (bad["status"], bad["returncode"]) == ("diverged", 1) and "became nan" in bad["error"]
    assert "## Runs that did not finish" in comparison["nan_report"]
    assert "became nan" in comparison["nan_report"]  # the error and the log's tail

    # the suite's summary: rows datasets, columns algorithms, success rate in %
    lines = [line for line in comparison["report"].splitlines() if line.startswith("| ")]
    assert lines[0] == f"| dataset | score | steps | BC | DT | {LINEAR} |"
    cells = {a: section["algos"][a]["final_score"] for a in ("bc", "dt")}
    expected = " | ".join(f"{100 * c['mean']:.1f} ± {100 * c['std']:.1f}" for c in cells.values())
    assert lines[1] == (f"| [main](main/report.md) | success rate (%) | 6 | {expected} | "
                        f"not run |")
    assert lines[2] == ("| [nan](nan/report.md) | success rate (%) | 6 | not run | not run | "
                        "- (0/1 seeds) |")
    assert "## Suite file" in comparison["report"]


@pytest.mark.slow
def test_resume_keeps_finished_runs_and_refuses_a_bare_rerun(comparison, capsys) -> None:
    out, root = comparison["out"], comparison["root"]
    # the same suite without the diverging entry (a diverged run would start again)
    suite = _suite(root / "suite-main.yaml", comparison["data"], comparison["template"], None)
    args = ["compare", "--suite", str(suite), "--out", str(out), "--no-progress"]
    assert main(args) == 2  # the folder exists: neither --force nor --resume
    assert "exists and is not empty" in capsys.readouterr().err
    logs = {p: p.stat().st_mtime_ns for p in (out / "main" / "logs").glob("*.log")}
    assert len(logs) == 4
    assert main([*args, "--resume"]) == 0  # all four finished earlier: nothing reruns
    assert "4 runs (4 done earlier" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (out / "main" / "logs").glob("*.log")} == logs
    section = json.loads((out / "main" / "results.json").read_text())["datasets"][0]
    assert [r["status"] for r in section["runs"]] == ["finished"] * 4
    assert section["algos"]["dt"] == comparison["main"]["datasets"][0]["algos"]["dt"]


@pytest.mark.slow
def test_report_only_rebuilds_the_same_numbers(comparison, capsys, tmp_path) -> None:
    out = comparison["out"]
    (out / "report.md").unlink()
    (out / "main" / "results.json").unlink()
    logs = {p: p.stat().st_mtime_ns for p in (out / "main" / "logs").glob("*.log")}
    assert main(["compare", "--report-only", "--out", str(out)]) == 0  # trains nothing
    assert {p: p.stat().st_mtime_ns for p in (out / "main" / "logs").glob("*.log")} == logs
    rebuilt = json.loads((out / "main" / "results.json").read_text())["datasets"][0]
    before = comparison["main"]["datasets"][0]
    for algo in ("bc", "dt"):
        for stat in ("final_score", "best_score", "final_return"):
            assert rebuilt["algos"][algo][stat] == before["algos"][algo][stat], (algo, stat)
    report = (out / "report.md").read_text()
    assert "rebuilt from the run folders" in report and "| [main](main/report.md) |" in report
    assert (out / "nan" / "report.md").is_file()
    assert main(["compare", "--report-only", "--out", str(tmp_path)]) == 2
    assert "has no plan.json" in capsys.readouterr().err
    assert main(["compare", "--report-only", "--out", str(out), "--resume"]) == 2
    assert "takes only --out" in capsys.readouterr().err
    assert main(["compare", "--report-only"]) == 2
    assert "needs --out" in capsys.readouterr().err


def test_help(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--dataset", "--suite", "--algos", "--seeds", "--steps", "--env", "--config",
                 "--parallel", "--threads", "--out", "--eval-every", "--eval-episodes",
                 "--force", "--resume", "--target-returns", "--report-only"):
        assert flag in text, flag


def test_bad_arguments_are_named(capsys, tmp_path) -> None:
    assert main(["compare", "--algos", "bc"]) == 2
    assert "--dataset SOURCE or --suite" in capsys.readouterr().err
    assert main(["compare", "--dataset", str(tmp_path / "missing"), "--algos", "bc",
                 "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing made before the inputs are checked
    with pytest.raises(CompareError, match="listed twice"):
        split_algos(["dt,bc", "dt"])


# ---- output folder ---------------------------------------------------------------------------


def test_prepare_out_refuses_force_deletes_only_compare_folders(tmp_path) -> None:
    out = tmp_path / "out"
    prepare_out(out, force=False, resume=False)  # new: created
    assert out.is_dir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CompareError, match="--force"):
        prepare_out(out, force=False, resume=False)
    with pytest.raises(CompareError, match="not made by offrl compare"):
        prepare_out(out, force=True, resume=False)  # never deletes a foreign folder
    with pytest.raises(CompareError, match="not an offrl compare output"):
        prepare_out(out, force=False, resume=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / PLAN_FILE).write_text("{}")
    prepare_out(out, force=False, resume=True)  # resume keeps everything
    assert (out / "notes.txt").exists()
    prepare_out(out, force=True, resume=False)
    assert out.is_dir() and not any(out.iterdir())
    with pytest.raises(CompareError, match="one of them"):
        prepare_out(out, force=True, resume=True)


# ---- aggregation -----------------------------------------------------------------------------


def _run(algo: str, seed: int, status: str, steps: list[int], scores: list[float],
         returns: list[float] | None = None, total: int = 30, **extra) -> dict:
    rows = [{"step": s, "eval/return_mean": r, "eval/normalized_score": x}
            for s, x, r in zip(steps, scores, returns or [10 * x for x in scores], strict=True)]
    return {"algo": algo, "seed": seed, "status": status, "total_steps": total,
            "eval_rows": rows, "wall_s": extra.get("wall_s", 1.0),
            "updates_per_s": extra.get("ups", 100.0)}


def test_seed_stats_and_mean_curve_by_hand() -> None:
    s = seed_stats([1.0, 2.0, 6.0, None])
    assert s["mean"] == pytest.approx(3.0) and s["n"] == 3
    assert s["std"] == pytest.approx(math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2))
    one = seed_stats([4.0])
    assert one["mean"] == 4.0 and one["std"] is None
    assert seed_stats([])["mean"] is None
    # unequal eval steps: only the steps both runs have are averaged; the rest is reported
    c = mean_curve([{"step": [10, 20, 30], "score": [1.0, 2.0, 3.0]},
                    {"step": [10, 30, 40], "score": [3.0, 7.0, 9.0]}])
    assert c["step"] == [10, 30] and c["dropped_steps"] == [20, 40]
    assert c["mean"] == pytest.approx([2.0, 5.0])
    assert c["std"] == pytest.approx([math.sqrt(2.0), math.sqrt(8.0)])
    assert mean_curve([{"step": [1], "score": [5.0]}])["std"] == [None]


def test_aggregate_skips_failed_runs_and_scores_by_hand() -> None:
    runs = [
        _run("cql", 0, "finished", [10, 20, 30], [20.0, 50.0, 40.0], wall_s=10.0, ups=200.0),
        _run("cql", 1, "finished", [10, 20, 30], [30.0, 30.0, 60.0], wall_s=14.0, ups=100.0),
        _run("cql", 2, "diverged", [10], [99.0]),  # higher than any, but it failed
        _run("dt", 0, "finished", [15, 30], [5.0, 7.0], returns=[1.0, 3.0]),
    ]
    assert pick_metric(runs) == "normalized_score"
    for r in runs:
        score_run(r, "normalized_score")
    assert runs[0]["final_score"] == 40.0 and runs[0]["best_score"] == 50.0
    assert runs[0]["best_step"] == 20 and runs[1]["best_step"] == 30
    assert runs[2]["final_score"] is None and runs[2]["best_score"] == 99.0
    agg = aggregate(runs, ["cql", "dt", "bc"])
    cql = agg["cql"]
    assert (cql["runs"], cql["finished"]) == (3, 2)
    assert cql["final_score"]["mean"] == pytest.approx(50.0)
    assert cql["final_score"]["std"] == pytest.approx(math.sqrt(200.0))
    assert cql["best_score"]["mean"] == pytest.approx(55.0)
    assert cql["final_return"]["mean"] == pytest.approx(500.0)
    assert cql["wall_s"]["mean"] == 12.0 and cql["updates_per_s"]["mean"] == 150.0
    assert cql["curve"]["mean"] == pytest.approx([25.0, 40.0, 50.0])
    assert agg["dt"]["final_return"]["mean"] == 3.0 and agg["dt"]["final_score"]["std"] is None
    assert agg["bc"]["runs"] == 0 and agg["bc"]["final_score"]["mean"] is None
    # a "finished" run whose last evaluation is not at its last step has no final score
    short = _run("bc", 0, "finished", [10], [1.0])
    score_run(short, "normalized_score")
    assert short["final_score"] is None
    success = [{"eval_rows": [{"step": 1, "eval/success_rate": 0.5, "eval/return_mean": 0.5}]}]
    assert pick_metric(success) == "success_rate"


# ---- plans, configs, suites, progress -------------------------------------------------------


def test_config_paths_and_plan(tmp_path) -> None:
    template = _tiny_configs(tmp_path / "configs")
    paths = config_paths([template, f"dt={tmp_path / 'configs/bc.yaml'}"], ["bc", "dt"])
    assert paths == {"bc": tmp_path / "configs/bc.yaml", "dt": tmp_path / "configs/bc.yaml"}
    assert config_paths([], ["bc"]) == {"bc": None}  # the algorithm's defaults
    with pytest.raises(CompareError, match="cql.yaml' for cql not found"):
        config_paths([template], ["bc", "cql"])
    with pytest.raises(CompareError, match="not among the algorithms"):
        config_paths(["pbc=x.yaml"], ["bc"])
    with pytest.raises(CompareError, match="ALGO=PATH"):
        config_paths(["x.yaml"], ["bc"])
    with pytest.raises(CompareError, match="is for algo 'bc', not 'dt'"):
        plan_runs(DatasetPlan("d", "src", None, Settings(
            algos=("dt",), config=(f"dt={tmp_path / 'configs/bc.yaml'}",)).over(DEFAULTS)),
            tmp_path, 1)
    plan = DatasetPlan("d", "src", "offrl/KeyToDoor-v0", Settings(
        algos=("bc", "dt"), seeds=2, first_seed=5, config=(template,), eval_episodes=4,
        target_returns=(1.0,)).over(DEFAULTS))
    runs = plan_runs(plan, tmp_path / "o", threads=2)
    assert [(r.algo, r.seed) for r in runs] == [("bc", 5), ("dt", 5), ("bc", 6), ("dt", 6)]
    cmd = runs[1].command
    flag = {cmd[i]: cmd[i + 1] for i in range(3, len(cmd) - 1) if cmd[i].startswith("--")}
    assert flag["--steps"] == str(RunConfig.total_steps)  # the config's total_steps
    assert flag["--eval-every"] == str(RunConfig.total_steps // 10)
    assert flag["--num-eval-episodes"] == "4" and flag["--num-eval-envs"] == "4"
    assert flag["--eval-seed"] == "1000000" and flag["--target-returns"] == "1.0"
    assert flag["--env"] == "offrl/KeyToDoor-v0" and flag["--num-threads"] == "2"
    assert flag["--run-dir"] == str(tmp_path / "o" / "runs" / "dt" / "seed5")


def test_suite_precedence_and_errors(tmp_path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("algos: dt,bc\nseeds: 2\nsteps: 100\neval_episodes: 5\n"
                     "datasets:\n"
                     "  - {dataset: 'minari:a/b-v0', env: E-v0}\n"
                     "  - {name: second, dataset: x.hdf5, steps: 7, algos: [bc],"
                     " config: {bc: c.yaml}}\n")
    first, second = load_suite(suite, Settings(seeds=1))
    assert (first.name, first.dataset, first.env) == ("a-b-v0", "minari:a/b-v0", "E-v0")
    assert first.settings.algos == ("dt", "bc") and first.settings.steps == 100
    assert first.settings.seeds == 1  # the command line wins over the suite
    assert first.settings.eval_seed == DEFAULTS.eval_seed  # built-in default
    assert (second.name, second.settings.steps, second.settings.algos) == ("second", 7, ("bc",))
    assert second.settings.config == ("bc=c.yaml",) and second.settings.eval_episodes == 5

    def error(text: str) -> str:
        suite.write_text(text)
        with pytest.raises(CompareError) as exc:
            load_suite(suite)
        return str(exc.value)

    assert "unknown key(s) ['step']" in error("step: 5\ndatasets: [{dataset: a}]\n")
    msg = error("datasets:\n  - {dataset: a, evals: 3}\n")
    assert "datasets[0]" in msg and "unknown key(s) ['evals']" in msg
    assert "'dataset'" in error("datasets:\n  - {env: E-v0}\n")
    assert "'seeds' must be an integer" in error("seeds: three\ndatasets: [{dataset: a}]\n")
    assert "used twice" in error("datasets: [{dataset: a}, {dataset: a}]\n")
    assert "non-empty list" in error("algos: [dt]\n")
    assert "not found" in str(pytest.raises(CompareError, load_suite, tmp_path / "no.yaml").value)


def test_shipped_suites_plan(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(REPO)  # their config paths are relative to the repository root
    suites = sorted(SUITES.glob("*.yaml"))
    assert len(suites) >= 2
    for path in suites:
        for plan in load_suite(path):
            runs = plan_runs(plan, tmp_path / plan.name, threads=1)
            assert len(runs) == len(plan.settings.algos) * plan.settings.seeds
            assert all(r.config is not None for r in runs)


def test_metrics_tail_and_status_line(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    tail.poll()  # no file yet
    assert tail.step == 0
    path.write_text('{"step": 10, "train/loss": 1.0}\n{"step": 20, "eval/success_rate": 0.25')
    tail.poll()
    assert tail.step == 10 and tail.eval_score is None  # the cut line waits for its end
    with open(path, "a") as f:
        f.write(', "eval/return_mean": 0.25}\n')
    tail.poll()
    assert tail.step == 20 and tail.eval_score == ("success_rate", 0.25)
    run = Run("d", "dt", 0, 40, [], tmp_path, tmp_path / "l", tmp_path / "r", show_dataset=False)
    assert "queued" in status_line(run, 0.0)
    run.started, run.tail = 100.0, tail
    line = status_line(run, 110.0)
    assert line.startswith("dt/seed0  20/40") and "success_rate 0.25 @20" in line
    assert "ETA 10s" in line


def test_resume_point(tmp_path) -> None:
    run = Run("d", "bc", 0, 100, ["python", "-m", "offrl.cli", "train", "--seed", "0"],
              tmp_path / "run", tmp_path / "log", tmp_path / "record.json")
    assert resume_point(run) == (None, 0.0, 0)  # never started
    run.record.write_text(json.dumps({"command": run.command, "returncode": -2, "wall_s": 7.5}))
    assert resume_point(run) == (None, 0.0, 0)  # no checkpoint yet: start over
    (run.run_dir / "checkpoints").mkdir(parents=True)
    for step in (20, 40):
        (run.run_dir / "checkpoints" / f"ckpt_{step}.pt").write_bytes(b"")
    (run.run_dir / "summary.json").write_text(json.dumps({"status": "failed", "step": 47}))
    assert resume_point(run) == (run.run_dir, 7.5, 40)  # newest checkpoint
    (run.run_dir / "summary.json").write_text(json.dumps({"status": "diverged", "step": 47}))
    assert resume_point(run) == (None, 0.0, 0)  # it would diverge again
    (run.run_dir / "summary.json").unlink()
    run.command = ["/other/python", *run.command[1:], "--num-threads", "4"]
    assert resume_point(run)[0] == run.run_dir  # same run: interpreter, threads do not count
    run.command = [*run.command[:-3], "1"]  # another plan: its old folder does not count
    assert resume_point(run) == (None, 0.0, 0)


def test_live_runs_finds_trainers_an_earlier_comparison_left_running(tmp_path) -> None:
    import subprocess

    run = Run("d", "bc", 0, 100, ["python"], tmp_path / "run", tmp_path / "log",
              tmp_path / "record.json")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             str(run.run_dir)])
    try:
        run.record.write_text(json.dumps({"command": [], "pid": proc.pid, "returncode": None}))
        deadline = time.time() + 10  # until the child has exec'd (its cmdline is its own)
        while not live_runs([run]) and time.time() < deadline:
            time.sleep(0.05)
        assert live_runs([run]) == [f"d/bc/seed0 (pid {proc.pid})"]
        run.record.write_text(json.dumps({"command": [], "pid": proc.pid, "returncode": 0}))
        assert live_runs([run]) == []  # it finished (per the record)
        other = Run("d", "bc", 1, 100, ["python"], tmp_path / "other", tmp_path / "log1",
                    tmp_path / "record1.json")
        other.record.write_text(json.dumps({"command": [], "pid": proc.pid,
                                            "returncode": None}))
        assert live_runs([other]) == []  # a live pid that trains another run: reused pid
    finally:
        proc.kill()
        proc.wait()
    run.record.write_text(json.dumps({"command": [], "pid": proc.pid, "returncode": None}))
    assert live_runs([run]) == []  # gone


def test_resume_compares_config_contents_not_paths(tmp_path) -> None:
    # An edited config under the same name is another run (it starts over); a renamed one
    # with the same content is the same run; records from before digests compare paths.
    def plan(config: Path) -> Run:
        settings = Settings(algos=("bc",), seeds=1, config=(f"bc={config}",)).over(DEFAULTS)
        (run,) = plan_runs(DatasetPlan("d", "data.hdf5", None, settings), tmp_path / "o", 1)
        return run

    old = tmp_path / "bc.yaml"
    old.write_text(dump_yaml(RunConfig(algo="bc", total_steps=40)))
    run = plan(old)
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "summary.json").write_text(json.dumps({"status": "finished", "step": 40}))
    run.record.parent.mkdir(parents=True, exist_ok=True)
    _write_record(run, 0)
    assert finished_earlier(run)
    renamed = tmp_path / "renamed.yaml"
    renamed.write_bytes(old.read_bytes())
    moved = plan(renamed)
    assert moved.command != run.command and finished_earlier(moved)
    old.write_text(dump_yaml(RunConfig(algo="bc", total_steps=40, seed=3)))  # edited in place
    edited = plan(old)
    assert edited.command == run.command and not finished_earlier(edited)
    assert resume_point(edited) == (None, 0.0, 0)
    record = json.loads(run.record.read_text())
    del record["config_sha256"]  # a record written before digests: the path decides
    run.record.write_text(json.dumps(record))
    assert finished_earlier(edited) and not finished_earlier(moved)


def test_a_killed_comparison_resumes_from_checkpoints(tmp_path) -> None:
    # The orchestrator itself may be SIGKILLed (a machine's session ending): the record it
    # wrote when the run started must be enough for --resume to continue from a checkpoint.
    run = Run("d", "bc", 0, 100, [sys.executable, "-c", "import time; time.sleep(60)"],
              tmp_path / "run", tmp_path / "logs" / "log", tmp_path / "record.json")
    _start(run, 1)
    try:
        record = json.loads(run.record.read_text())
        assert record["command"] == run.command and record["returncode"] is None
        (run.run_dir / "checkpoints").mkdir(parents=True)
        (run.run_dir / "checkpoints" / "ckpt_20.pt").write_bytes(b"")
        time.sleep(0.2)
        _write_record(run, None)  # what execute's refresh does while the run lives
        wall = json.loads(run.record.read_text())["wall_s"]
        assert wall >= 0.2
    finally:
        assert run.proc is not None
        run.proc.kill()
        run.proc.wait()
        assert run.log_file is not None
        run.log_file.close()
    assert not finished_earlier(run)
    assert resume_point(run) == (run.run_dir, wall, 20)


def test_metrics_tail_rereads_a_truncated_file(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10}\n{"step": 20}\n{"step": 30}\n')
    tail = MetricsTail(path)
    tail.poll()
    assert tail.step == 30
    path.write_text('{"step": 10}\n')  # a resumed trainer drops rows after its checkpoint
    tail.poll()
    assert tail.step == 10


def test_per_target_final_scores_by_hand() -> None:
    from offrl.compare_report import per_target

    def run(r1: float, r0: float) -> dict:
        return {"eval_targets": [1.0, 0.0], "final_eval": {
            "eval/1/return_mean": r1, "eval/1/success_rate": r1,
            "eval/0/return_mean": r0, "eval/0/success_rate": r0}}

    rows = per_target([run(0.9, 0.1), run(0.7, 0.3)], "success_rate")
    assert [r["target"] for r in rows] == [1.0, 0.0]
    assert rows[0]["final_return"]["mean"] == pytest.approx(0.8)
    assert rows[0]["final_score"]["std"] == pytest.approx(math.sqrt(0.02))
    assert rows[1]["final_score"]["mean"] == pytest.approx(0.2)
    single = {"eval_targets": [None], "final_eval": {"eval/none/return_mean": 1.0}}
    assert per_target([single], "return_mean") == []  # one target: nothing to add


def test_last_score_averages_the_last_three_evaluations() -> None:
    from offrl.compare_report import score_run

    rows = [{"step": s, "eval/normalized_score": x, "eval/return_mean": 10 * x}
            for s, x in [(1, 90.0), (2, 1.0), (3, 50.0), (4, 20.0), (5, 2.0)]]
    run = {"status": "finished", "total_steps": 5, "eval_rows": rows}
    score_run(run, "normalized_score")
    assert run["final_score"] == 2.0 and run["best_score"] == 90.0
    assert run["last_score"] == pytest.approx((50.0 + 20.0 + 2.0) / 3)
    cut = {"status": "finished", "total_steps": 6, "eval_rows": rows}  # no final evaluation
    score_run(cut, "normalized_score")
    assert cut["final_score"] is None and cut["last_score"] is None


def test_section_from_fabricated_runs(tmp_path) -> None:
    """read_run's statuses and the report, from run folders written by hand (no training)."""
    from offrl.compare_report import build_section, context, write_section

    def make(algo: str, seed: int, record: dict | None, summary: dict | None,
             evals: list[tuple[int, float]]) -> Run:
        run = Run("d", algo, seed, 10, ["python", "-m", "offrl.cli", "train", algo],
                  tmp_path / algo / str(seed), tmp_path / f"{algo}{seed}.log",
                  tmp_path / f"{algo}{seed}.json")
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "config.yaml").write_text(f"algo: {algo}\nreward: delayed\n")
        run.log.write_text("line 1\nTraceback: boom\n")
        if record is not None:
            run.record.write_text(json.dumps({"command": run.command, **record}))
        if summary is not None:
            (run.run_dir / "summary.json").write_text(json.dumps(summary))
        rows = [{"step": s, "eval/return_mean": x, "eval/success_rate": x} for s, x in evals]
        (run.run_dir / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 11, "eval/ret')  # cut line
        return run

    done = {"status": "finished", "step": 10, "updates_per_s": 50.0, "final_eval": {}}
    runs = [
        make("dt", 0, {"returncode": 0, "wall_s": 3.0}, {**done, "eval_targets": [1.0]},
             [(5, 0.2), (10, 0.4)]),
        make("dt", 1, {"returncode": 0, "wall_s": 5.0}, {**done, "eval_targets": [0.5]},
             [(5, 0.6), (10, 0.2)]),
        make("bc", 0, {"returncode": -2, "wall_s": 1.0, "interrupted": True},
             {"status": "failed", "step": 4, "error": "KeyboardInterrupt: "}, []),
        make("bc", 1, None, None, []),
    ]
    plan = DatasetPlan("d", "src", "offrl/KeyToDoor-v0", Settings(algos=("dt", "bc"))
                       .over(DEFAULTS))
    desc = {"name": "tiny", "env_id": "offrl/KeyToDoor-v0", "episodes": 3, "steps": 30,
            "return_mean": 0.5, "return_std": 0.1, "return_min": 0.0, "return_max": 1.0,
            "ref_min_score": None, "ref_max_score": None}
    section = build_section(plan, runs, desc)
    assert [r["status"] for r in section["runs"]] == ["finished", "finished", "interrupted",
                                                      "not run"]
    assert section["metric"] == "success_rate"
    dt = section["algos"]["dt"]
    assert dt["final_score"]["mean"] == pytest.approx(0.3)
    assert dt["best_score"]["mean"] == pytest.approx(0.5)  # 0.4 @10 and 0.6 @5
    assert dt["wall_s"]["mean"] == 4.0
    assert section["warnings"] and "different target returns" in section["warnings"][0]
    write_section(section, context([], 2, 1, 9.0, interrupted=True), tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "> Interrupted" in report and "> Warning: return-conditioned" in report
    assert report.startswith("# offrl compare: d\n")  # the plan's name, not the dataset's
    assert "Rewards: delayed (" in report and section["rewards"] == ["delayed"]
    assert "### BC seed 0: interrupted (exit code -2)" in report
    assert "Traceback: boom" in report and "### BC seed 1: not run" in report
    # final, last-3 (each run's mean of its evaluations: 0.3 and 0.4), best; in %
    assert "| DT | 30.0 ± 14.1 | 35.0 ± 7.1 | 50.0 ± 14.1 |" in report
    assert (tmp_path / "out" / "curves_score.png").stat().st_size > 0
    # A suite interrupted elsewhere: this dataset's finished runs get no banner.
    finished = build_section(plan, runs[:2], desc)
    write_section(finished, context([], 2, 1, 9.0, interrupted=True), tmp_path / "fin")
    assert "> Interrupted" not in (tmp_path / "fin" / "report.md").read_text()


def test_report_rebuilt_during_a_comparison_lists_live_runs_as_running(tmp_path) -> None:
    """A record without an exit code whose trainer is alive is "running" (not "failed")."""
    import subprocess

    from offrl.compare_report import _section_banners, read_run

    run = Run("d", "bc", 0, 10, ["python"], tmp_path / "run", tmp_path / "log",
              tmp_path / "record.json")
    run.run_dir.mkdir()
    run.log.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             str(run.run_dir)])
    try:
        run.record.write_text(json.dumps({"command": [], "pid": proc.pid, "returncode": None}))
        deadline = time.time() + 10  # until the child has exec'd (its cmdline is its own)
        while read_run(run)["status"] != "running" and time.time() < deadline:
            time.sleep(0.05)
        assert read_run(run)["status"] == "running"
        banners = _section_banners([read_run(run)], interrupted=True)
        assert len(banners) == 1 and banners[0].startswith("> In progress: 1 run(s)")
    finally:
        proc.kill()
        proc.wait()
    assert read_run(run)["status"] == "failed"  # gone without an exit code


def test_tally_counts_established_differences_per_pair() -> None:
    """tally: per pair, the datasets where a - b is above 0, below 0, not established, or
    without an interval; a listed b - a is flipped; datasets missing an algorithm skipped."""
    from offrl.compare_report import _tally_table, tally

    def w(low: float, high: float) -> dict:
        return {"diff": (low + high) / 2, "low": low, "high": high}

    sections = [
        {"name": "up", "algos": {"dt": {}, "cql": {}},
         "differences": [{"a": "dt", "b": "cql", "final_score": w(0.1, 0.3),
                          "last_score": w(-0.1, 0.2)}]},
        {"name": "down", "algos": {"dt": {}, "cql": {}},  # listed as cql - dt: flipped
         "differences": [{"a": "cql", "b": "dt", "final_score": w(0.1, 0.3),
                          "last_score": None}]},
        {"name": "cql only", "algos": {"cql": {}}, "differences": []},
    ]
    (row,) = tally(sections, ["dt", "cql"])
    assert row["final_score"] == {"a_above": ["up"], "b_above": ["down"],
                                  "not_established": [], "no_interval": []}
    assert row["last_score"] == {"a_above": [], "b_above": [], "not_established": ["up"],
                                 "no_interval": ["down"]}
    text = _tally_table([row])
    assert "| DT vs CQL | final | 1 (up) | 1 (down) | 0 | 0 |" in text
    assert "| DT vs CQL | last-3 | 0 | 0 | 1 (up) | 1 (down) |" in text
