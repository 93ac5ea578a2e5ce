"""`offrl compare`: every algorithm x seed on one dataset (or a suite), as `offrl train`
subprocesses sharing one evaluation protocol, then one report (see `offrl.compare_report`).

Why subprocesses: each run is exactly what `offrl train` does (same run folder, checkpoints,
metrics.jsonl, summary.json), runs cannot disturb one another (torch thread pools, global
RNG), and a crash or a NaN stop ends one run, not the comparison.

The evaluation protocol is set here and passed as flags to every run, overriding the per-algo
YAML configs: evaluation cadence, episodes, envs and the episode seeds (the SAME seeds for
every algorithm and every training seed, so differences between runs are not differences in
evaluation episodes), and optionally the target returns of return-conditioned algorithms.

Output layout (one dataset):
    OUT/plan.json                      what was asked (marks the folder as a compare output)
    OUT/runs/<algo>/seed<k>/           the `offrl train` run folders
    OUT/logs/<algo>-seed<k>.log|.json  each run's stdout+stderr, exit code and wall time
    OUT/report.md, results.json, curves_*.png
A suite: OUT/plan.json, a summary OUT/report.md + results.json, and the rest of the layout
above in OUT/<dataset name>/ for each dataset.

--resume keeps runs that finished with the same command, continues interrupted ones from
their newest checkpoint (`offrl train --resume`, exact) and starts the others again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

from offrl.compare_display import Display, MetricsTail, status_line
from offrl.compare_resume import finished_earlier, live_runs, read_json, resume_point, same_run

DEFAULT_ALGOS = ("dt", "cql", "bc", "pbc")
PLAN_FILE = "plan.json"
PLAN_FORMAT = "offrl-compare-plan/1"


class CompareError(ValueError):
    """Bad compare arguments or suite file; the message names what is wrong."""


# ---- what to run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Per-dataset settings. None means "not set here": a suite's dataset entry falls back to
    the suite's top level, then to the command line defaults (`resolve`)."""

    algos: tuple[str, ...] | None = None
    seeds: int | None = None
    first_seed: int | None = None
    steps: int | None = None
    config: tuple[str, ...] | None = None  # "algo=path" entries or templates with {algo}
    eval_every: int | None = None
    eval_episodes: int | None = None
    eval_envs: int | None = None
    eval_seed: int | None = None
    target_returns: tuple[float, ...] | None = None
    device: str | None = None

    def over(self, base: Settings) -> Settings:
        """These settings where set, else `base`'s."""
        return Settings(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                           else getattr(base, f.name) for f in fields(Settings)})


DEFAULTS = Settings(algos=DEFAULT_ALGOS, seeds=3, first_seed=0, eval_episodes=10,
                    eval_seed=1_000_000, config=())


@dataclass(frozen=True)
class DatasetPlan:
    """One dataset to compare on: its source, eval env and fully resolved settings."""

    name: str  # output sub-folder in a suite; a slug of the source by default
    dataset: str
    env: str | None
    settings: Settings


@dataclass
class Run:
    """One `offrl train` subprocess."""

    dataset: str  # DatasetPlan.name
    algo: str
    seed: int
    total_steps: int
    command: list[str]
    run_dir: Path
    log: Path
    record: Path  # JSON: command, exit code, wall time (written at start, refreshed, final at end)
    eval_every: int = 0
    config: str | None = None
    config_sha256: str | None = None  # of the config file's content when planned
    proc: subprocess.Popen | None = None
    log_file: TextIO | None = None
    started: float | None = None
    returncode: int | None = None
    wall_s: float | None = None
    skipped: bool = False  # --resume: finished earlier with the same command
    resume_from: Path | None = None  # --resume: continue this run folder from its checkpoint
    earlier_wall_s: float = 0.0  # --resume: wall time of the attempts before
    base_step: int = 0  # the step this attempt starts from (the checkpoint's when resumed)
    interrupted: bool = False
    tail: Any = None  # MetricsTail while running

    show_dataset: bool = True  # labels name the dataset only in suites

    @property
    def label(self) -> str:
        own = f"{self.algo}/seed{self.seed}"
        return f"{self.dataset}/{own}" if self.show_dataset else own


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.removeprefix("minari:")).strip("-") or "dataset"


def split_algos(items: Sequence[str]) -> tuple[str, ...]:
    """`["dt,cql", "bc"]` -> ("dt", "cql", "bc"): accepts commas and separate words."""
    algos = tuple(a.strip() for item in items for a in str(item).split(",") if a.strip())
    dupes = sorted({a for a in algos if algos.count(a) > 1})
    if dupes:
        raise CompareError(f"algorithm(s) {dupes} listed twice")
    if not algos:
        raise CompareError("no algorithms given (e.g. --algos dt,cql,bc,pbc)")
    return algos


def config_paths(entries: Sequence[str], algos: Sequence[str]) -> dict[str, Path | None]:
    """Per-algo YAML config from `algo=path` entries and `{algo}` templates (an explicit
    `algo=path` wins over a template). Algorithms without one train with their defaults."""
    templates = [e for e in entries if "{algo}" in e]
    explicit: dict[str, str] = {}
    for entry in entries:
        if "{algo}" in entry:
            continue
        algo, sep, path = entry.partition("=")
        if not sep or not algo or not path:
            raise CompareError(f"config entry '{entry}': expected ALGO=PATH or a path template "
                               f"containing {{algo}} (e.g. experiments/configs/"
                               f"hopper-medium-{{algo}}.yaml)")
        if algo not in algos:
            raise CompareError(f"config entry '{entry}': '{algo}' is not among the algorithms "
                               f"compared ({', '.join(algos)})")
        explicit[algo] = path
    if len(templates) > 1:
        raise CompareError(f"more than one config template: {templates}")
    out: dict[str, Path | None] = {}
    for algo in algos:
        if algo in explicit:
            out[algo] = Path(explicit[algo])
        elif templates:
            out[algo] = Path(templates[0].replace("{algo}", algo))
        else:
            out[algo] = None
        if out[algo] is not None and not out[algo].is_file():
            raise CompareError(f"config file '{out[algo]}' for {algo} not found")
    return out


def run_log_files(folder: Path, algo: str, seed: int) -> tuple[Path, Path]:
    """(output log, JSON record) of one run of a dataset's output folder."""
    stem = f"{slug(algo)}-seed{seed}"  # a slug may hold dots: no with_suffix
    return folder / "logs" / f"{stem}.log", folder / "logs" / f"{stem}.json"


def plan_runs(plan: DatasetPlan, folder: Path, threads: int) -> list[Run]:
    """The `offrl train` command of every algorithm x seed, seed-major (all algorithms'
    first seed runs first, so an early look at a long comparison already compares)."""
    from offrl.config import ConfigError, RunConfig, load_yaml, resolve_algorithm

    s = plan.settings
    assert s.algos is not None and s.seeds is not None and s.first_seed is not None
    if s.seeds < 1:
        raise CompareError(f"{plan.name}: seeds must be >= 1, got {s.seeds}")
    for name in ("steps", "eval_episodes", "eval_envs"):
        value = getattr(s, name)
        if value is not None and value < 1:
            raise CompareError(f"{plan.name}: {name} must be >= 1, got {value}")
    if s.eval_every is not None and s.eval_every < 0:
        raise CompareError(f"{plan.name}: eval_every must be >= 0, got {s.eval_every}")
    configs = config_paths(s.config or (), s.algos)
    steps: dict[str, int] = {}
    for algo in s.algos:
        try:
            resolve_algorithm(algo)
            path = configs[algo]
            base = load_yaml(path) if path is not None else None
        except ConfigError as exc:
            raise CompareError(f"{plan.name}: {exc}") from exc
        if base is not None and base.algo != algo:
            raise CompareError(f"config '{configs[algo]}' is for algo '{base.algo}', not '{algo}'")
        steps[algo] = s.steps or (base or RunConfig).total_steps
    digests = {algo: (hashlib.sha256(Path(p).read_bytes()).hexdigest() if p is not None
                      else None) for algo, p in configs.items()}

    runs = []
    for seed in range(s.first_seed, s.first_seed + s.seeds):
        for algo in s.algos:
            run_dir = folder / "runs" / slug(algo) / f"seed{seed}"
            episodes = s.eval_episodes or 10
            eval_every = s.eval_every if s.eval_every is not None else max(1, steps[algo] // 10)
            cmd = [sys.executable, "-m", "offrl.cli", "train", "--algo", algo]
            if configs[algo] is not None:
                cmd += ["--config", str(configs[algo])]
            cmd += ["--dataset", plan.dataset]
            if plan.env is not None:
                cmd += ["--env", plan.env]
            cmd += ["--seed", str(seed), "--steps", str(steps[algo]),
                    "--eval-every", str(eval_every), "--num-eval-episodes", str(episodes),
                    "--num-eval-envs", str(min(s.eval_envs or 10, episodes)),
                    "--eval-seed", str(s.eval_seed)]
            if s.target_returns:
                cmd += ["--target-returns", *(repr(float(t)) for t in s.target_returns)]
            if s.device is not None:
                cmd += ["--device", s.device]
            cmd += ["--run-dir", str(run_dir), "--num-threads", str(threads), "--no-progress"]
            runs.append(Run(plan.name, algo, seed, steps[algo], cmd, run_dir,
                            *run_log_files(folder, algo, seed), eval_every=eval_every,
                            config=str(configs[algo]) if configs[algo] else None,
                            config_sha256=digests[algo]))
    return runs


# ---- suites ----------------------------------------------------------------------------------

_SETTING_KEYS = {f.name for f in fields(Settings)}
_DATASET_KEYS = {"name", "dataset", "env"}


def _setting(key: str, value: Any, where: str) -> Any:
    def fail(expected: str) -> CompareError:
        return CompareError(f"{where}: '{key}' must be {expected}, got {value!r}")

    if key == "algos":
        if isinstance(value, str):
            return split_algos([value])
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return split_algos(value)
        raise fail("a list of algorithm names or 'dt,cql,...'")
    if key == "config":
        if isinstance(value, str):
            return (value,)
        if isinstance(value, Mapping):
            return tuple(f"{k}={v}" for k, v in value.items())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise fail("a path template with {algo}, a mapping algo: path, or a list of those")
    if key == "target_returns":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (float(value),)
        if isinstance(value, list) and value and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return tuple(float(v) for v in value)
        raise fail("a number or a list of numbers")
    if key == "device":
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail("an integer")
    return value


def _settings(data: Mapping[str, Any], where: str) -> Settings:
    return Settings(**{k: _setting(k, v, where) for k, v in data.items() if k in _SETTING_KEYS})


def load_suite(path: str | Path, cli: Settings = Settings()) -> list[DatasetPlan]:
    """Datasets of a suite YAML (see experiments/suites/). Precedence, lowest first: built-in
    defaults < the suite's top level < the dataset's entry < flags given on the command line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CompareError(f"suite file '{path}' not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CompareError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, Mapping):
        raise CompareError(f"{path}: expected a mapping with a 'datasets:' list at the top")
    unknown = sorted(set(data) - _SETTING_KEYS - {"datasets"})
    if unknown:
        raise CompareError(f"{path}: unknown key(s) {unknown}; the top level takes 'datasets' "
                           f"and {sorted(_SETTING_KEYS)}")
    entries = data.get("datasets")
    if not isinstance(entries, list) or not entries:
        raise CompareError(f"{path}: 'datasets' must be a non-empty list of "
                           f"{{dataset: SOURCE, env: ID, ...}} entries")
    top = _settings(data, str(path))
    plans, names = [], set()
    for i, entry in enumerate(entries):
        where = f"{path}: datasets[{i}]"
        if not isinstance(entry, Mapping):
            raise CompareError(f"{where}: expected a mapping, got {entry!r}")
        unknown = sorted(set(entry) - _SETTING_KEYS - _DATASET_KEYS)
        if unknown:
            raise CompareError(f"{where}: unknown key(s) {unknown}; a dataset entry takes "
                               f"{sorted(_DATASET_KEYS)} and {sorted(_SETTING_KEYS)}")
        source = entry.get("dataset")
        if not isinstance(source, str) or not source:
            raise CompareError(f"{where}: 'dataset' (the source, e.g. minari:<id>) is required")
        env = entry.get("env")
        if env is not None and not isinstance(env, str):
            raise CompareError(f"{where}: 'env' must be a gymnasium id, got {env!r}")
        name = entry.get("name", slug(source))
        if not isinstance(name, str) or slug(name) != name:
            raise CompareError(f"{where}: 'name' must be a folder name ([A-Za-z0-9._-]), "
                               f"got {name!r}")
        if name in names:
            raise CompareError(f"{where}: name '{name}' is used twice; give each entry a "
                               f"distinct 'name'")
        names.add(name)
        settings = cli.over(_settings(entry, where).over(top.over(DEFAULTS)))
        plans.append(DatasetPlan(name, source, env, settings))
    return plans


# ---- running ---------------------------------------------------------------------------------


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    # torch.set_num_threads (--num-threads) covers torch's pool; these cap OpenMP/BLAS pools
    # that numpy and torch start on their own, so P runs x T threads never oversubscribe.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"  # the log tail of a failed run must hold its last words
    return env


def _default_sigint() -> None:
    """In the child before exec: a shell starts background jobs with SIGINT ignored, which
    children inherit; the trainer must get it to stop cleanly and write its summary.json."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(run: Run, threads: int) -> None:
    command = run.command
    if run.resume_from is not None:
        # Exact resume from the newest checkpoint; the run's saved config carries the rest.
        command = [*run.command[:4], "--resume", str(run.resume_from),
                   "--num-threads", str(threads), "--no-progress"]
    elif run.run_dir.exists():  # a leftover of an unfinished earlier attempt (--resume)
        shutil.rmtree(run.run_dir)
    run.log.parent.mkdir(parents=True, exist_ok=True)
    run.record.unlink(missing_ok=True)
    mode = "a" if run.resume_from is not None else "w"
    run.log_file = open(run.log, mode, encoding="utf-8")  # noqa: SIM115 (closed in _finish)
    run.log_file.write(f"$ {shlex.join(command)}\n")
    run.log_file.flush()
    # Own session: a terminal Ctrl-C reaches only the orchestrator, which stops the children
    # itself (SIGINT first, so each trainer writes its summary.json, then SIGKILL).
    run.proc = subprocess.Popen(command, stdout=run.log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_child_env(threads),
                                start_new_session=True, preexec_fn=_default_sigint)
    run.started = time.time()
    run.tail = MetricsTail(run.run_dir / "metrics.jsonl")
    # Written now (exit code null) and refreshed while it runs, so that a comparison killed
    # outright (SIGKILL, a machine's session ending) still finds what each run was started
    # with and how long it ran: --resume then continues from its checkpoints.
    _write_record(run, None)


def _write_record(run: Run, code: int | None) -> None:
    run.wall_s = run.earlier_wall_s + time.time() - (run.started or time.time())
    tmp = run.record.with_suffix(".json.tmp")
    pid = run.proc.pid if run.proc is not None else None
    tmp.write_text(json.dumps({"command": run.command, "config_sha256": run.config_sha256,
                               "pid": pid, "returncode": code,
                               "wall_s": run.wall_s, "started": run.started,
                               "interrupted": run.interrupted,
                               "resumed": run.resume_from is not None}, indent=1) + "\n",
                   encoding="utf-8")
    os.replace(tmp, run.record)


def _finish(run: Run, code: int) -> None:
    run.returncode = code
    if run.log_file is not None:
        run.log_file.close()
        run.log_file = None
    if run.tail is not None:
        run.tail.poll()
    _write_record(run, code)


def _stop(running: list[Run], grace_s: float = 15.0) -> None:
    """SIGINT every child's process group, wait up to `grace_s` (each trainer writes its
    summary.json), then SIGKILL the rest; a second Ctrl-C kills them at once."""
    for run in running:
        run.interrupted = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.proc.pid, signal.SIGINT)  # type: ignore[union-attr]
    deadline = time.time() + grace_s
    try:
        for run in running:
            assert run.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(timeout=max(0.0, deadline - time.time()))
    except KeyboardInterrupt:
        pass
    for run in running:
        assert run.proc is not None
        if run.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
        _finish(run, run.proc.returncode)


def execute(runs: list[Run], parallel: int, threads: int, display: Display,
            poll_s: float = 0.5, record_every_s: float = 30.0) -> bool:
    """Run the not-skipped runs, at most `parallel` at a time. Returns False when interrupted
    (Ctrl-C or SIGTERM): running children are stopped, queued ones never start. Running
    runs' records are refreshed every `record_every_s` (their wall time so far)."""
    pending = [r for r in runs if not r.skipped]
    running: list[Run] = []
    last_record = time.time()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                run = pending.pop(0)
                _start(run, threads)
                running.append(run)
                display.event(f"started  {run.label}  (log: {run.log})")
            time.sleep(poll_s)
            for run in list(running):
                assert run.proc is not None and run.tail is not None
                run.tail.poll()
                code = run.proc.poll()
                if code is not None:
                    _finish(run, code)
                    running.remove(run)
                    display.event(status_line(run, time.time())
                                  + ("" if code == 0 else f"; log: {run.log}"))
            if time.time() - last_record >= record_every_s:
                for run in running:
                    _write_record(run, None)
                last_record = time.time()
            display.update()
    except KeyboardInterrupt:
        display.event(f"interrupted: stopping {len(running)} running run(s) ...")
        _stop(running)
        return False
    finally:
        signal.signal(signal.SIGTERM, previous)
        display.update(final=True)
    return True


# ---- the whole comparison --------------------------------------------------------------------


def plan_dict(plans: list[DatasetPlan], runs: list[Run], argv: Sequence[str],
              suite: str | None) -> dict[str, Any]:
    return {
        "format": PLAN_FORMAT, "argv": list(argv), "suite": suite,
        "datasets": [{"name": p.name, "dataset": p.dataset, "env": p.env,
                      "settings": {f.name: getattr(p.settings, f.name)
                                   for f in fields(Settings)}} for p in plans],
        "runs": [{"dataset": r.dataset, "algo": r.algo, "seed": r.seed,
                  "run_dir": str(r.run_dir), "command": r.command} for r in runs],
    }


def prepare_out(out: Path, force: bool, resume: bool) -> None:
    """Refuse to mix results into an existing folder unless told how (--force / --resume)."""
    if force and resume:
        raise CompareError("--force starts over and --resume continues: pass one of them")
    if not out.exists() or not any(out.iterdir()):
        if resume:
            raise CompareError(f"--resume: '{out}' holds no earlier comparison")
        out.mkdir(parents=True, exist_ok=True)
        return
    marked = (out / PLAN_FILE).is_file()
    if resume:
        if not marked:
            raise CompareError(f"--resume: '{out}' has no {PLAN_FILE}; it is not an offrl "
                               f"compare output")
        return
    if not force:
        raise CompareError(f"output folder '{out}' exists and is not empty; pass --force to "
                           f"replace it, --resume to finish its unfinished runs, or another "
                           f"--out")
    if not marked:  # never delete a folder this command did not make
        raise CompareError(f"--force: '{out}' has no {PLAN_FILE}, so it was not made by offrl "
                           f"compare; refusing to delete it (remove it yourself or pick "
                           f"another --out)")
    shutil.rmtree(out)
    out.mkdir(parents=True)


@dataclass
class CompareOptions:
    out: Path
    parallel: int
    threads: int
    force: bool = False
    resume: bool = False
    progress: bool = True
    status_every: float = 30.0
    argv: list[str] = field(default_factory=list)
    suite: str | None = None


def run_compare(plans: list[DatasetPlan], opts: CompareOptions,
                stream: TextIO | None = None) -> int:
    """Plan, run and report. Exit code: 0 all runs finished, 1 some failed, 130 interrupted."""
    from offrl import compare_report

    stream = stream or sys.stderr
    out = opts.out.resolve()
    is_suite = opts.suite is not None
    folders = {p.name: (out / p.name if is_suite else out) for p in plans}
    runs = [r for p in plans for r in plan_runs(p, folders[p.name], opts.threads)]
    for run in runs:
        run.show_dataset = is_suite
    # Describe (and so check) every dataset before the folder is touched or a run starts.
    descriptions = {}
    for p in plans:
        print(f"loading {p.dataset} ...", file=stream, flush=True)
        descriptions[p.name] = compare_report.describe_dataset(p.dataset, p.env)
    if (opts.force or opts.resume) and (live := live_runs(runs)):
        raise CompareError(f"{len(live)} run(s) of the earlier comparison in '{out}' are still "
                           f"training: {', '.join(live)}; wait for them or stop them (kill "
                           f"PID) before --resume or --force")
    prepare_out(out, opts.force, opts.resume)
    changed = []
    for run in runs:
        run.skipped = opts.resume and finished_earlier(run)
        if opts.resume and not run.skipped:
            run.resume_from, run.earlier_wall_s, run.base_step = resume_point(run)
            record = read_json(run.record)
            if record is not None and not same_run(record, run):
                changed.append(run.label)
    if changed:
        print(f"  {len(changed)} run(s) start over: their command or config content changed "
              f"since they ran ({', '.join(changed)})", file=stream, flush=True)
    tmp = out / (PLAN_FILE + ".tmp")
    tmp.write_text(json.dumps(plan_dict(plans, runs, opts.argv, opts.suite), indent=1) + "\n",
                   encoding="utf-8")
    os.replace(tmp, out / PLAN_FILE)

    todo = [r for r in runs if not r.skipped]
    resumed = sum(r.resume_from is not None for r in todo)
    print(f"offrl compare -> {out}\n  {len(runs)} runs ({len(runs) - len(todo)} done earlier, "
          f"{resumed} continued from a checkpoint), "
          f"{min(opts.parallel, max(1, len(todo)))} at a time, {opts.threads} torch thread(s) "
          f"each", file=stream, flush=True)
    live = opts.progress and stream.isatty()
    display = Display(runs, stream, live, opts.status_every, enabled=opts.progress)
    t0 = time.time()
    completed = execute(runs, opts.parallel, opts.threads, display)
    wall = time.time() - t0

    context = compare_report.context(opts.argv, opts.parallel, opts.threads, wall,
                                     interrupted=not completed)
    sections = []
    for p in plans:
        section = compare_report.build_section(p, [r for r in runs if r.dataset == p.name],
                                               descriptions[p.name])
        compare_report.write_section(section, context, folders[p.name])
        sections.append(section)
    if is_suite:
        compare_report.write_suite(sections, context, out,
                                   Path(opts.suite).read_text(encoding="utf-8"))
    failed = [r for s in sections for r in s["runs"] if r["status"] != "finished"]
    print(f"report: {out / 'report.md'}", file=stream)
    if failed:
        print(f"{len(failed)} run(s) did not finish: "
              + ", ".join(f"{r['dataset']}/{r['algo']}/seed{r['seed']} ({r['status']})"
                          for r in failed), file=stream)
    if not completed:
        return 130
    return 1 if failed else 0


__all__ = [
    "DEFAULTS", "CompareError", "CompareOptions", "DatasetPlan", "MetricsTail", "Run",
    "Settings", "config_paths", "execute", "finished_earlier", "load_suite", "plan_runs",
    "prepare_out", "resume_point", "run_compare", "slug", "split_algos", "status_line",
]
