"""The progress display of `offrl compare`: what each `offrl train` subprocess has reached,
read from the metrics.jsonl it appends to (the runs are other processes: the file is the only
channel), shown as a live block on a terminal or as plain periodic lines in logs and CI."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from offrl.compare import Run


class MetricsTail:
    """Reads the rows a running trainer appends to metrics.jsonl, incrementally (a partial
    last line is kept until its newline arrives)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""
        self.step = 0
        self.eval_step: int | None = None
        self.eval_score: tuple[str, float] | None = None

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self.offset:
                    # a resumed trainer drops the rows written after its checkpoint: reread
                    self.offset, self.partial, self.step = 0, b"", 0
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.step = max(self.step, int(row.get("step", 0)))
            for key in ("eval/success_rate", "eval/normalized_score", "eval/return_mean"):
                if key in row:
                    self.eval_step, self.eval_score = int(row["step"]), (key[5:], row[key])
                    break


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def status_line(run: Run, now: float) -> str:
    """`dataset/algo/seedK  1200/5000  eval success_rate 0.31 @1000  ETA 2m10s` (or the
    run's state when it is not running)."""
    if run.skipped:
        return f"{run.label}  done earlier (--resume)"
    if run.started is None:
        return f"{run.label}  queued ({run.total_steps} steps)"
    tail: MetricsTail | None = run.tail
    step = tail.step if tail else 0
    text = f"{run.label}  {step}/{run.total_steps}"
    if tail is not None and tail.eval_score is not None:
        name, value = tail.eval_score
        text += f"  eval {name} {value:.3g} @{tail.eval_step}"
    if run.returncode is not None:
        state = "done" if run.returncode == 0 else f"FAILED (exit {run.returncode})"
        return f"{text}  {state} in {_duration(run.wall_s or 0.0)}"
    elapsed = now - run.started
    if step >= run.total_steps:
        eta = "final evaluation"
    elif step > run.base_step:
        eta = f"ETA {_duration(elapsed * (run.total_steps - step) / (step - run.base_step))}"
    else:
        eta = "starting"
    return f"{text}  {eta}"


class Display:
    """A live block of status lines on a terminal (redrawn in place); elsewhere (logs, CI)
    plain lines: one when a run starts or ends and a status block every `every` seconds."""

    def __init__(self, runs: list[Run], stream: TextIO, live: bool, every: float,
                 enabled: bool = True) -> None:
        self.runs, self.stream, self.live, self.every = runs, stream, live, every
        self.enabled = enabled
        self.drawn = 0
        self.last_block = time.time()

    def event(self, text: str) -> None:
        if not self.enabled:
            return
        if self.live:
            self._clear()
        print(text, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")  # up N lines, clear to the end
            self.drawn = 0

    def update(self, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.time()
        if self.live:
            size = shutil.get_terminal_size((120, 40))
            self._clear()
            shown = self.runs
            if len(shown) > size.lines - 2:  # the cursor cannot move above the screen's top
                shown = [r for r in self.runs if r.started is not None and r.returncode is None]
            lines = [status_line(r, now)[:size.columns - 1] for r in shown]
            if len(shown) < len(self.runs):
                done = sum(r.returncode is not None or r.skipped for r in self.runs)
                lines.append(f"({done} done, "
                             f"{len(self.runs) - done - len(shown)} queued)")
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
            self.drawn = 0 if final else len(lines)
        elif now - self.last_block >= self.every or final:
            self.last_block = now
            active = [r for r in self.runs if r.started is not None and r.returncode is None]
            for run in active if not final else []:
                print(f"  {status_line(run, now)}", file=self.stream, flush=True)


__all__ = ["Display", "MetricsTail", "status_line"]
