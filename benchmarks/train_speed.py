"""Training updates/s of offrl and d3rlpy 2.8.1 on the same data, interleaved in one run.

offrl side: the real `offrl.trainer.Trainer` on a D4RL-layout HDF5 file (no evaluation; the
hook stops it after the last timed chunk, before any log line or checkpoint), timed by a
trainer hook at chunk boundaries: what is measured is exactly the user's loop
(sampler.sample, algorithm.update under the configured precision, the finite-metric check,
progress and interval bookkeeping). d3rlpy side: a worker process in `.venv-d3rlpy` (see
d3rlpy_worker.py) that runs d3rlpy's own `fit` step (sample + update).
At every chunk boundary of the offrl run the hook hands the same number of updates to the
d3rlpy worker and waits, so each offrl chunk has a d3rlpy chunk right next to it; the ratio
reported is the median of the per-pair ratios, which cancels load swings that hit both.

FLOPs per update are counted on one extra update of each side (benchmarks/flops.py), and
parameters are counted on both sides: equal parameter counts check that the two
configurations build the same networks; FLOP counts may still differ by what each update
computes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.flops import count_flops

ROOT = Path(__file__).resolve().parent.parent
D3RLPY_PYTHON = ROOT / ".venv-d3rlpy" / "bin" / "python"
ENV_ID = "Hopper-v5"


@dataclass(frozen=True)
class Workload:
    """One benchmarked configuration; `algo_config` are offrl's fields (the d3rlpy worker
    builds the same networks, see its docstring)."""

    algo: str
    description: str
    algo_config: dict[str, Any]
    warmup: int  # untimed updates before the first chunk (allocator, kernel selection)


WORKLOADS: dict[str, Workload] = {
    "bc": Workload("bc", "BC: MLP 256x2, batch 256",
                   {"hidden": (256, 256), "batch_size": 256}, warmup=50),
    "cql": Workload("cql", "CQL: twin critics 256x3, actor 256x3, batch 256, 10 actions",
                    {"critic_hidden": (256, 256, 256), "actor_hidden": (256, 256, 256),
                     "batch_size": 256, "num_sampled_actions": 10}, warmup=5),
    "dt": Workload("dt", "DT: K=20, 128-dim, 3 layers, 1 head, batch 64",
                   {"context": 20, "embed_dim": 128, "num_layers": 3, "num_heads": 1,
                    "batch_size": 64}, warmup=5),
}


def precision_option(spec: str) -> tuple[str, str, Any] | None:
    """Where the trainer exposes bf16 mixed precision. `spec` is FIELD=VALUE (e.g.
    "precision=bf16"); returns ("run" | "algo-<name>", field, value) for the first config
    that has FIELD (RunConfig first, then each algorithm's Config), None when none has it."""
    from offrl.algorithms import ALGORITHMS
    from offrl.config import RunConfig

    name, _, value = spec.partition("=")
    if {f.name for f in dataclasses.fields(RunConfig)} >= {name}:
        return ("run", name, value)
    for algo, cls in ALGORITHMS.items():
        if name in {f.name for f in dataclasses.fields(cls.Config)}:
            return (f"algo-{algo}", name, value)
    return None


class D3rlpyWorker:
    """Client of benchmarks/d3rlpy_worker.py running in the d3rlpy venv."""

    def __init__(self, data: Path, algo: str, python: Path = D3RLPY_PYTHON,
                 log_dir: Path | None = None) -> None:
        log_dir = log_dir or Path(tempfile.gettempdir())
        self.log_path = log_dir / f"d3rlpy_worker_{algo}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [str(python), str(ROOT / "benchmarks" / "d3rlpy_worker.py"), "--data", str(data),
             "--algo", algo], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, cwd=ROOT)
        self.info = self._receive()

    def _receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log_path.read_text()[-3000:]
            raise RuntimeError(f"d3rlpy worker exited ({self.proc.returncode}); log "
                               f"{self.log_path}:\n{tail}")
        return json.loads(line)

    def run(self, updates: int, threads: int) -> float:
        """Seconds for `updates` d3rlpy training steps at `threads` torch threads."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": "run", "updates": updates,
                                          "threads": threads}) + "\n")
        self.proc.stdin.flush()
        return float(self._receive()["seconds"])

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class _ChunksDone(Exception):
    """Raised by `PairedChunks` after the last chunk: ends the trainer's loop early."""


@dataclass
class PairedChunks:
    """Trainer hook. After `warmup` steps it times `repeats` chunks of a fixed number of
    updates; at each chunk boundary the peer (if any) runs a chunk of the same size, outside
    offrl's timing. The chunk size is `updates` when given, else it is fixed once from the
    warm-up rates so that the faster side's chunk takes about `chunk_s` seconds (at least
    `min_updates`): a loaded machine slows everything down several times over, and a fixed
    count that suits an idle machine would then take far too long. The peer's warm-up (as
    many updates as offrl's) runs untimed for the benchmark, timed only for that choice."""

    warmup: int
    repeats: int
    threads: int
    updates: int | None = None
    chunk_s: float = 3.0
    min_updates: int = 5
    peer: D3rlpyWorker | None = None
    offrl_s: list[float] = field(default_factory=list)
    peer_s: list[float] = field(default_factory=list)
    _first: float | None = None
    _start: float | None = None

    def __post_init__(self) -> None:
        if self.warmup < 2 or self.repeats < 1:
            raise ValueError(f"PairedChunks needs warmup >= 2 and repeats >= 1, "
                             f"got {self.warmup}, {self.repeats}")

    def max_steps(self, max_updates: int) -> int:
        """A total_steps bound for the trainer (the hook stops it after the last chunk)."""
        return self.warmup + self.repeats * (self.updates or max_updates) + 1

    def _choose_updates(self, now: float) -> int:
        assert self._first is not None
        rates = [(self.warmup - 1) / max(now - self._first, 1e-9)]  # step 1 excluded
        if self.peer is not None:
            rates.append(self.warmup / self.peer.run(self.warmup, self.threads))
        return max(self.min_updates, round(self.chunk_s * max(rates)))

    def __call__(self, trainer: Any, step: int) -> None:
        if step == 1:
            self._first = time.perf_counter()
        if step < self.warmup:
            return
        now = time.perf_counter()
        if step == self.warmup:
            if self.updates is None:
                self.updates = self._choose_updates(now)
            elif self.peer is not None:
                self.peer.run(self.warmup, self.threads)
        elif (step - self.warmup) % self.updates:
            return
        else:
            self.offrl_s.append(now - self._start)  # type: ignore[operator]
            if self.peer is not None:
                self.peer_s.append(self.peer.run(self.updates, self.threads))
            if len(self.offrl_s) == self.repeats:
                raise _ChunksDone
        self._start = time.perf_counter()


def rate_summary(seconds: list[float], updates: int, flops: int | None) -> dict[str, Any]:
    rates = [updates / s for s in seconds]
    med = statistics.median(rates)
    out: dict[str, Any] = {"updates_per_s": med, "runs": rates}
    if flops is not None:
        out["flops_per_update"] = flops
        out["gflop_per_s"] = flops * med / 1e9
    return out


def measure(
    workload: Workload, data: Path, threads: int, *, updates: int | None = None,
    warmup: int | None = None, repeats: int = 3, chunk_s: float = 3.0,
    precision: tuple[str, str, Any] | None = None,
    peer: D3rlpyWorker | None = None, work_dir: Path | None = None,
) -> dict[str, Any]:
    """updates/s (median of `repeats` chunks) and FLOPs of offrl, and of `peer` when given,
    for one workload at `threads` torch threads; `precision` from `precision_option`."""
    import torch

    from offrl.algorithms import ALGORITHMS
    from offrl.config import RunConfig
    from offrl.trainer import Trainer

    algo_cls = ALGORITHMS[workload.algo]
    algo_kwargs = dict(workload.algo_config)
    run_kwargs: dict[str, Any] = {}
    if precision is not None:
        where, name, value = precision
        if where == "run":
            run_kwargs[name] = value
        elif where == f"algo-{workload.algo}":
            algo_kwargs[name] = value
        else:
            raise ValueError(f"{workload.algo} has no precision option ({where}.{name})")
    hook = PairedChunks(workload.warmup if warmup is None else warmup, repeats, threads,
                        updates=updates, chunk_s=chunk_s, peer=peer)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        config = RunConfig(
            algo=workload.algo, dataset=str(data), env_id=ENV_ID, seed=0,
            total_steps=hook.max_steps(1_000_000), log_every=1_000_000, eval_every=0,
            num_eval_episodes=0, checkpoint_every=0, keep_checkpoints=1, device="cpu",
            num_threads=threads, run_dir=str(Path(tmp) / "run"),
            algo_config=algo_cls.Config(**algo_kwargs), **run_kwargs)
        trainer = Trainer(config, progress=False, hooks=[hook])
        with contextlib.suppress(_ChunksDone):
            trainer.run()
        flops = count_flops(lambda: trainer.algorithm.update(trainer.sampler.sample()))
        params = sum(p.numel() for p in trainer.algorithm.nets.parameters())
    result: dict[str, Any] = {
        "algo": workload.algo, "workload": workload.description, "threads": threads,
        "torch_threads_seen": torch.get_num_threads(),
        "precision": f"{precision[1]}={precision[2]}" if precision else "fp32",
        "updates_per_repeat": hook.updates, "warmup": hook.warmup, "repeats": repeats,
        "offrl": {**rate_summary(hook.offrl_s, hook.updates, flops), "parameters": params},
        "d3rlpy": None,
    }
    if peer is not None:
        result["d3rlpy"] = {**rate_summary(hook.peer_s, hook.updates,
                                           peer.info.get("flops_per_update")),
                            "parameters": peer.info.get("parameters")}
        # Each offrl chunk ran right before its d3rlpy chunk: the median of the per-pair
        # ratios cancels load swings that hit both, which the ratio of medians does not.
        pairs = [p / o for o, p in zip(hook.offrl_s, hook.peer_s, strict=True)]
        result["ratio"] = statistics.median(pairs)
        result["pair_ratios"] = pairs
        result["ratio_of_medians"] = (result["offrl"]["updates_per_s"]
                                      / result["d3rlpy"]["updates_per_s"])
    return result


def machine_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


__all__ = ["D3RLPY_PYTHON", "WORKLOADS", "D3rlpyWorker", "PairedChunks", "Workload",
           "machine_cores", "measure", "precision_option"]
