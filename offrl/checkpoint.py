"""Checkpoint files: atomic writes, validation on load, keep-last-N plus best.

A checkpoint is one `torch.save` dict (see `offrl.trainer.Trainer.checkpoint_payload`):

    format: "offrl-checkpoint", format_version: 1
    algo: registered name or module:Class    run_config: RunConfig as a plain dict
    algorithm: algorithm.state_dict()        sampler: sampler.state_dict()
    rng: {torch, cuda (list or None), numpy (bit generator state)}
    step: gradient steps done                 trainer: best score, pending log sums, ...
    dataset: {name, env_id, ref scores, spaces}   eval_targets: resolved target returns
    versions: {offrl, torch, numpy, gymnasium, python}

Files are written to a temporary name in the same folder, fsynced and renamed, so a crash
at any point leaves either the previous file or the complete new one, never a partial one.
"""

from __future__ import annotations

import os
import platform
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "offrl-checkpoint"
FORMAT_VERSION = 1
_PERIODIC = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A missing, corrupt or incompatible checkpoint; the message names the file and problem."""


def library_versions() -> dict[str, str]:
    import gymnasium
    import numpy

    import offrl

    return {
        "offrl": offrl.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
        "gymnasium": gymnasium.__version__, "python": platform.python_version(),
    }


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """`torch.save(obj)` to `path` via temp file + fsync + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint file; `CheckpointError` says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' not found")
    try:
        # weights_only=False: algorithm states may hold numpy arrays and config objects.
        # Like any pickle, only load checkpoints you trust.
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint, cannot be read ({type(exc).__name__}: "
            f"{exc}); use another checkpoint from the same run folder") from exc
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an offrl checkpoint (no format='{FORMAT}' key)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, this offrl reads version "
            f"{FORMAT_VERSION}; evaluate it with the offrl release that wrote it")
    missing = [k for k in ("algo", "run_config", "algorithm", "step", "versions")
               if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    saved, now = payload["versions"].get("torch"), torch.__version__
    if saved != now:
        warnings.warn(f"{path}: written with torch {saved}, loading with {now}", stacklevel=2)
    return payload


def periodic_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of `ckpt_<step>.pt` files in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _PERIODIC.match(p.name))]
    return sorted(found)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a file, a run folder or its checkpoints/ folder (newest)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"'{path}' does not exist (expected a checkpoint or run folder)")
    for folder in (path / "checkpoints", path):
        found = periodic_checkpoints(folder)
        if found:
            return found[-1][1]
    raise CheckpointError(f"no ckpt_<step>.pt in '{path}' or '{path / 'checkpoints'}'")


class CheckpointManager:
    """Writes `ckpt_<step>.pt` (keeps the newest `keep_last`) and `best.pt` in `folder`."""

    def __init__(self, folder: str | Path, keep_last: int) -> None:
        self.folder = Path(folder)
        self.keep_last = int(keep_last)
        self.folder.mkdir(parents=True, exist_ok=True)
        # Temp files of a write the process did not survive.
        for stale in self.folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        path = atomic_save(payload, self.folder / f"ckpt_{step}.pt")
        for _, old in periodic_checkpoints(self.folder)[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def save_best(self, payload: dict[str, Any]) -> Path:
        return atomic_save(payload, self.folder / "best.pt")

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"


def restore_algorithm(payload: dict[str, Any], device: str | torch.device = "cpu",
                      source: str | Path = "checkpoint") -> Any:
    """Rebuild the algorithm of a loaded checkpoint from the checkpoint alone."""
    from offrl.config import ConfigError, resolve_algorithm

    try:
        algo_cls = resolve_algorithm(payload["algo"])
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    try:
        return algo_cls.from_state_dict(payload["algorithm"], device)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: algorithm state does not fit '{payload['algo']}' "
                              f"({type(exc).__name__}: {exc})") from exc
