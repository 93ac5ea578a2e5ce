"""`make bench`: offrl side by side with d3rlpy 2.8.1 in one run, as ratios.

On a hopper-shaped synthetic dataset (obs 11, action 3, 1M transitions; written once to a
D4RL-layout HDF5 file in a cache folder, read by both libraries):
- training updates/s of DT (K=20, 128-dim, 3 layers, 1 head, batch 64), CQL (twin critics and
  actor 256x3, batch 256, 10 sampled actions) and BC (256x2, batch 256), offrl through its
  real trainer and d3rlpy through its `fit` step, in interleaved chunks (train_speed.py),
  at the machine's core count and at 1 torch thread, fp32, and offrl's bf16 option;
- FLOPs per update and achieved GFLOP/s against the measured matmul peak (fp32 and bf16);
- DT evaluation on Hopper-v5: env steps/s with 10 envs in lockstep vs one env at a time,
  offrl's own and d3rlpy's sequential acting loop (eval_speed.py --peer, run as a
  subprocess).
Median of 3 repeats; prints a table with ratios and targets, writes benchmarks/results/bench.json.

    python -m benchmarks.bench [--quick] [--steps 1000000] [--threads 2,1] [--algos dt,cql,bc]
        [--skip d3rlpy,eval,bf16,peak] [--out benchmarks/results/bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.data_layer import busy_machine, make_file
from benchmarks.matmul_peak import matmul_peak
from benchmarks.train_speed import (
    D3RLPY_PYTHON,
    ROOT,
    WORKLOADS,
    D3rlpyWorker,
    machine_cores,
    measure,
    precision_option,
)

# (metric key, minimum ratio offrl / reference): the targets of issue #8 (CQL's 3x is asked
# without a precision; at fp32 it is out of reach, see the README, so both rows carry it).
TARGETS = {"bc/fp32": 3.0, "cql/fp32": 3.0, "cql/bf16": 3.0, "dt/fp32": 1.3, "dt/bf16": 2.5,
           "eval": 10.0}
QUICK_UPDATES = {"bc": 20, "cql": 2, "dt": 2}
SKIPPABLE = ("d3rlpy", "eval", "bf16", "peak")


def dataset_file(steps: int, cache_dir: Path) -> Path:
    """The synthetic hopper-shaped HDF5 file (data_layer.make_file), written once per size."""
    path = cache_dir / f"hopper_synthetic_{steps}_seed0.hdf5"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        make_file(tmp, steps)
        tmp.replace(path)
    return path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f", "avx2")))


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(), "cores": machine_cores(), "cpu_flags": cpu_flags(),
        "python": platform.python_version(), "torch": torch.__version__,
        "default_torch_threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def run_eval_speed(threads: int, episodes: int, envs: int, out: Path,
                   peer: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.eval_speed", "--episodes",
           str(episodes), "--envs", str(envs), "--threads", str(threads), "--out", str(out)]
    if peer:
        cmd.append("--peer")
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(out.read_text())


def fmt(x: float | str | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return f"{x:,.1f}" if x >= 10 else f"{x:,.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'metric':<46}{'offrl':>14}{'reference':>14}{'ratio':>8}{'target':>8}  ok"
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
        target = f">={r['target']:g}x" if r.get("target") is not None else ""
        ok = "" if r.get("ok") is None else ("yes" if r["ok"] else "NO")
        lines.append(f"{r['metric']:<46}{fmt(r.get('offrl')):>14}{fmt(r.get('reference')):>14}"
                     f"{ratio:>8}{target:>8}  {ok}")
    return "\n".join(lines)


def train_rows(results: list[dict[str, Any]], peak: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per measurement: an updates/s row (ratio, target) and a GFLOP/s row, with the share
    of the matmul peak at the same thread count (bf16 peak for offrl's bf16 variant, fp32
    peak for fp32 and for d3rlpy, which runs fp32)."""
    rows = []
    for r in results:
        prec = "fp32" if r["precision"] == "fp32" else "bf16"
        ours, ref = r["offrl"], r["d3rlpy"]
        target, ratio = TARGETS.get(f"{r['algo']}/{prec}"), r.get("ratio")
        rows.append({
            "metric": f"{r['algo'].upper()} updates/s, {r['threads']} thr, offrl {prec}",
            "offrl": ours["updates_per_s"], "reference": ref["updates_per_s"] if ref else None,
            "ratio": ratio, "target": target,
            "ok": None if target is None or ratio is None else ratio >= target})
        row: dict[str, Any] = {"metric": "  GFLOP/s (% of matmul peak)"}
        for side, res, key in (("offrl", ours, prec), ("reference", ref, "fp32")):
            if res is None:
                continue
            g = res["gflop_per_s"]
            pk = peak[str(r["threads"])][key] if peak and str(r["threads"]) in peak else None
            row[side] = f"{g:,.1f} ({100 * g / pk:.0f}%)" if pk else f"{g:,.1f}"
        rows.append(row)
    return rows


def eval_rows(ev: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows from eval_speed.py's JSON: per acting mode, N envs in lockstep vs one env at a
    time, and the KV cache at N envs vs the exact window one env at a time. The target goes
    on the row comparing offrl's default acting mode (`DTConfig.kv_cache`) at N envs with
    sequential evaluation as a reference implementation does it (one env, the full K-step
    window every step)."""
    from offrl.algorithms import DTConfig

    modes = ev.get("modes") or {"exact": ev}  # older eval_speed.py: one mode, top level
    rows = [{"metric": f"DT eval env steps/s [{mode}], {ev['envs']} envs vs 1",
             "offrl": m["vectorized_env_steps_per_s"], "reference": m["one_env_env_steps_per_s"],
             "ratio": m["speedup"]} for mode, m in modes.items()]
    default = "kv-cache" if getattr(DTConfig(), "kv_cache", False) else "exact"
    target = TARGETS["eval"]
    if "kv-cache" in modes and "exact" in modes:
        ours = modes["kv-cache"]["vectorized_env_steps_per_s"]
        seq = modes["exact"]["one_env_env_steps_per_s"]
        rows.append({"metric": f"DT eval {ev['envs']} envs [kv-cache] vs 1 [exact]",
                     "offrl": ours, "reference": seq, "ratio": ours / seq})
    # The target compares offrl's default acting mode with exact sequential evaluation.
    if default in modes and "exact" in modes:
        row = rows[-1] if default == "kv-cache" else rows[list(modes).index("exact")]
        row.update(target=target, ok=row["ratio"] >= target)
    peer = ev.get("d3rlpy_sequential")
    if peer:  # and with the peer's sequential loop, timed in the same rounds
        for mode, m in modes.items():
            ratio = m.get("speedup_vs_d3rlpy_sequential")
            row = {"metric": f"DT eval {ev['envs']} envs [{mode}] vs d3rlpy 1 env",
                   "offrl": m["vectorized_env_steps_per_s"],
                   "reference": peer["env_steps_per_s"], "ratio": ratio}
            if mode == default and ratio is not None:
                row.update(target=target, ok=ratio >= target)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a few updates, 1 repeat, small matmuls (smoke test, not a measurement)")
    p.add_argument("--steps", type=int, default=1_000_000, help="dataset transitions")
    p.add_argument("--threads", default="auto",
                   help="comma-separated torch thread counts; auto: cores,1 on an idle machine, "
                        "1 alone when the load average already exceeds half the cores")
    p.add_argument("--algos", default="dt,cql,bc")
    p.add_argument("--repeats", type=int, default=None, help="default 3 (quick: 1)")
    p.add_argument("--skip", default="", help=f"comma-separated parts to skip: {SKIPPABLE}")
    p.add_argument("--bf16-option", default="precision=bf16",
                   help="FIELD=VALUE of the run/algorithm config that turns on bf16")
    p.add_argument("--eval-threads", type=int, default=1,
                   help="torch threads for the evaluation benchmark (both sides)")
    p.add_argument("--cache-dir", type=Path,
                   default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                   / "offrl-bench")
    p.add_argument("--d3rlpy-python", type=Path, default=D3RLPY_PYTHON)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bench.json")
    args = p.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if bad := skip - set(SKIPPABLE):
        p.error(f"--skip: unknown part(s) {sorted(bad)}; expected {SKIPPABLE}")
    algos = [a for a in args.algos.split(",") if a]
    if bad := set(algos) - set(WORKLOADS):
        p.error(f"--algos: unknown {sorted(bad)}; expected {sorted(WORKLOADS)}")
    cores = machine_cores()
    notes: list[str] = []
    load = os.getloadavg()[0]
    if args.threads == "auto":
        threads = sorted({cores, 1}, reverse=True)
        if busy_machine(cores):  # multi-thread rates would measure the scheduler
            threads = [1]
            notes.append(f"load average {load:.1f} on {cores} cores at start: measured at 1 "
                         f"torch thread only (--threads {cores},1 forces both)")
    else:
        threads = [int(t) for t in args.threads.split(",") if t]
    repeats = args.repeats or (1 if args.quick else 3)
    t_start = time.perf_counter()

    summary: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {"quick": args.quick, "dataset_steps": args.steps, "threads": threads,
                     "repeats": repeats, "algos": algos, "skip": sorted(skip),
                     "eval_threads": args.eval_threads},
        "workloads": {a: {"description": WORKLOADS[a].description,
                          "offrl_algo_config": WORKLOADS[a].algo_config} for a in algos},
        "notes": notes,
    }
    data = dataset_file(args.steps, args.cache_dir)
    summary["settings"]["dataset_file"] = str(data)

    peak = None
    if "peak" not in skip:
        peak = {}
        for t in threads:
            torch.set_num_threads(t)
            sizes = (512,) if args.quick else (1024, 2048)
            by_size = {n: matmul_peak(n, 2 if args.quick else 6) for n in sizes}
            peak[str(t)] = {k: max(v[k] for v in by_size.values()) for k in ("fp32", "bf16")}
            peak[str(t)]["by_size"] = {str(n): v for n, v in by_size.items()}
            print(f"matmul peak, {t} thread(s): fp32 {peak[str(t)]['fp32']:,.1f}, "
                  f"bf16 {peak[str(t)]['bf16']:,.1f} GFLOP/s", flush=True)
        torch.set_num_threads(summary["machine"]["default_torch_threads"])
    summary["matmul_peak_gflop_per_s"] = peak

    precision = None
    if "bf16" not in skip:
        precision = precision_option(args.bf16_option)
        if precision is None:
            notes.append(f"bf16 variant skipped: no config has the field "
                         f"'{args.bf16_option.split('=')[0]}' (--bf16-option)")
    use_d3rlpy = "d3rlpy" not in skip and args.d3rlpy_python.exists()
    if "d3rlpy" not in skip and not use_d3rlpy:
        notes.append(f"d3rlpy side skipped: {args.d3rlpy_python} not found (make venv-d3rlpy)")

    train: list[dict[str, Any]] = []
    d3rlpy_info: dict[str, Any] = {}
    for algo in algos:
        w = WORKLOADS[algo]
        peer = D3rlpyWorker(data, algo, args.d3rlpy_python) if use_d3rlpy else None
        try:
            if peer is not None:
                d3rlpy_info[algo] = peer.info
            for t in threads:
                variants = [None] + ([precision] if precision is not None else [])
                for prec in variants:
                    kw: dict[str, Any] = {"repeats": repeats, "precision": prec, "peer": peer}
                    if args.quick:
                        kw.update(updates=QUICK_UPDATES[algo], warmup=2)
                    r = measure(w, data, t, **kw)
                    train.append(r)
                    ref = r["d3rlpy"]["updates_per_s"] if r["d3rlpy"] else None
                    print(f"{algo} {r['precision']:>14} {t} thr: offrl "
                          f"{r['offrl']['updates_per_s']:8.2f} upd/s, d3rlpy {fmt(ref):>8} "
                          f"({time.perf_counter() - t_start:.0f} s)", flush=True)
        finally:
            if peer is not None:
                peer.close()
    summary["train"] = train
    summary["d3rlpy"] = d3rlpy_info
    for algo, info in d3rlpy_info.items():
        ours = next(r["offrl"] for r in train if r["algo"] == algo)
        rel_flops = info["flops_per_update"] / ours["flops_per_update"]
        rel_params = info["parameters"] / ours["parameters"]
        if abs(rel_params - 1) > 0.001:
            notes.append(f"{algo}: d3rlpy builds {info['parameters']:,} parameters, offrl "
                         f"{ours['parameters']:,}: the two configurations differ")
        elif info["parameters"] != ours["parameters"]:
            notes.append(f"{algo}: {info['parameters'] - ours['parameters']:+,} parameters in "
                         f"d3rlpy (embedding tables, no matmul FLOPs), otherwise the same")
        if abs(rel_flops - 1) > 0.01:
            notes.append(f"{algo}: d3rlpy executes {rel_flops:.2f}x offrl's matmul FLOPs per "
                         f"update with networks of the same size (work its update does that "
                         f"offrl's does not)")

    if "eval" not in skip:
        episodes, envs = (2, 2) if args.quick else (10, 10)
        with tempfile.TemporaryDirectory() as tmp:
            summary["eval"] = run_eval_speed(
                args.eval_threads, episodes, envs, Path(tmp) / "eval_speed.json",
                peer="d3rlpy" not in skip and D3RLPY_PYTHON.exists())

    dl = ROOT / "benchmarks/results/data_layer.json"
    if dl.exists():
        summary["data_layer"] = {"file": str(dl.relative_to(ROOT)),
                                 "modified": time.ctime(dl.stat().st_mtime),
                                 **json.loads(dl.read_text())}

    rows = train_rows(train, peak)
    if "eval" in summary:
        rows += eval_rows(summary["eval"])
    summary["table"] = rows
    summary["machine"]["load_average_end"] = list(os.getloadavg())
    summary["wall_s"] = time.perf_counter() - t_start

    print()
    print(f"{summary['machine']['cpu_model']}, {cores} cores, torch {torch.__version__}, "
          f"load average {summary['machine']['load_average_start'][0]:.1f} at start, "
          f"{summary['machine']['load_average_end'][0]:.1f} at the end")
    print(f"reference: d3rlpy 2.8.1 (training; rates are medians of {repeats} chunks, ratios "
          f"medians of the paired chunks' ratios) / one env at a time (evaluation)")
    print(table(rows))
    for n in notes:
        print(f"note: {n}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=float) + "\n")
    tmp.replace(args.out)
    print(f"saved {args.out} ({summary['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

