"""Metric sinks: a small `Logger` protocol, TensorBoard, a JSON-lines file, and a fan-out.

Every scalar is logged against the gradient step. Nothing here is configured at import time
(TensorBoard is imported only when a `TensorBoardLogger` is built). Both file sinks can
resume a run: rows/events after the resumed step are dropped, so a run that was killed and
resumed leaves one consistent history.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Logger(Protocol):
    def scalars(self, step: int, values: Mapping[str, float]) -> None: ...
    def text(self, tag: str, text: str) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class TensorBoardLogger:
    """TensorBoard event files in `log_dir`; `resume_step` purges events logged after it."""

    def __init__(self, log_dir: str | Path, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events with step >= purge_step left by the killed run.
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(log_dir), purge_step=purge)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def text(self, tag: str, text: str) -> None:
        # TensorBoard renders text as markdown: indent so YAML shows as a code block.
        self.writer.add_text(tag, "\n".join("    " + line for line in text.splitlines()))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _jsonable(value: float) -> float | str:
    # JSON has no NaN/inf; write them as strings so a diverged value stays visible.
    return value if math.isfinite(value) else str(value)


class JsonlLogger:
    """One JSON object per `scalars` call: {"step": s, "<tag>": value, ...}, flushed each row
    so a killed run loses nothing it had logged."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def _truncate_after(self, step: int) -> None:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the kill
                continue
            if row.get("step", 0) <= step:
                kept.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        row = {"step": int(step), **{k: _jsonable(float(v)) for k, v in values.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def text(self, tag: str, text: str) -> None:  # config text lives in config.yaml
        pass

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class MultiLogger:
    """Sends every call to each of `loggers`."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for logger in self.loggers:
            logger.scalars(step, values)

    def text(self, tag: str, text: str) -> None:
        for logger in self.loggers:
            logger.text(tag, text)

    def flush(self) -> None:
        for logger in self.loggers:
            logger.flush()

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl file (NaN/inf strings turned back into floats)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows.append({k: float(v) if isinstance(v, str) else v for k, v in row.items()})
    return rows
