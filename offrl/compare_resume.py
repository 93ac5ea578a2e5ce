"""`offrl compare --resume`: which runs of an earlier comparison count as the runs planned now,
which finished, where the unfinished ones continue, and whether any is still training.

Each run's record (`logs/<algo>-seed<k>.json`, written by `offrl.compare` when the run starts,
refreshed while it runs and final when it ends) holds its command, its config file's sha256,
the trainer's pid, exit code and wall time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # offrl.compare imports this module
    from offrl.compare import Run


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def live_runs(runs: Sequence[Run]) -> list[str]:
    """Runs whose record names a trainer process that is still alive and training that run.
    Trainers run in their own process sessions, so an `offrl compare` killed outright leaves
    them running; a second one must not resume or delete their folders meanwhile. Liveness is
    read from /proc (where there is none, a process is taken to be gone)."""
    found = []
    for run in runs:
        record = read_json(run.record) or {}
        pid = record.get("pid")
        if record.get("returncode") is not None or not isinstance(pid, int):
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run.run_dir).encode() in argv:
            found.append(f"{run.label} (pid {pid})")
    return found


def _identity(command: Sequence[str], config_sha256: str | None = None) -> list[str]:
    """What makes two run commands the same run: neither the interpreter's path nor the
    thread count (they change nothing learned beyond floating-point noise); with a config
    digest, the config file's content instead of its path."""
    words = list(command[1:])
    if "--num-threads" in words:
        i = words.index("--num-threads")
        del words[i:i + 2]
    if config_sha256 is not None and "--config" in words:
        i = words.index("--config")
        words[i + 1] = f"sha256:{config_sha256}"
    return words


def same_run(record: dict[str, Any] | None, run: Run) -> bool:
    """Whether a run record describes `run` as planned now. Records that hold the config's
    digest compare contents: a renamed config is the same run, an edited one is not (its
    run starts over). Older records, without it, compare the config's path."""
    if record is None:
        return False
    digest = record.get("config_sha256")
    return (_identity(record.get("command") or (), digest)
            == _identity(run.command, run.config_sha256 if digest is not None else None))


def finished_earlier(run: Run) -> bool:
    """--resume skips a run whose record shows the same command and whose summary.json says
    it finished all its steps."""
    record, summary = read_json(run.record), read_json(run.run_dir / "summary.json")
    return (record is not None and summary is not None and same_run(record, run)
            and record.get("returncode") == 0
            and summary.get("status") == "finished"
            and summary.get("step") == run.total_steps)


def resume_point(run: Run) -> tuple[Path | None, float, int]:
    """--resume on an unfinished run: its folder if it was started with the same command,
    did not diverge (it would again, from its last good checkpoint) and has a checkpoint,
    else None (start over); the wall time it already took; the checkpoint's step."""
    from offrl.checkpoint import periodic_checkpoints

    record, summary = read_json(run.record), read_json(run.run_dir / "summary.json")
    if not same_run(record, run):
        return None, 0.0, 0
    if (summary or {}).get("status") == "diverged":
        return None, 0.0, 0
    found = periodic_checkpoints(run.run_dir / "checkpoints")
    if not found:
        return None, 0.0, 0
    return run.run_dir, float(record.get("wall_s") or 0.0), found[-1][0]
