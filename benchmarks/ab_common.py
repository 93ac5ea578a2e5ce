"""What the interleaved in-process A/B scripts (`bc_update_ab.py`, `cql_path_ab.py`,
`relu16_ab.py`) share: their default dataset (`make bench`'s synthetic hopper file), its
loading, flushing subnormals while they run, and the results file."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from offrl.datasets import EpisodeDataset, load_dataset

DEFAULT_DATA = Path.home() / ".cache" / "offrl-bench" / "hopper_synthetic_1000000_seed0.hdf5"


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="D4RL-layout HDF5 (default: make bench's 1M-step synthetic hopper)")
    p.add_argument("--out", type=Path, default=None)


def load_data(path: Path) -> EpisodeDataset:
    if not path.is_file():
        raise SystemExit(f"{path}: no such dataset (run `make bench` once, or pass --data)")
    return load_dataset(str(path), env_id="Hopper-v5")


@contextlib.contextmanager
def flushed_denormals() -> Iterator[None]:
    """Subnormals flushed to zero while the A/B runs, as the trainer does
    (RunConfig.flush_denormal): Adam moments of dead units would otherwise slow every side as
    they decay into subnormals. Off again afterwards."""
    flushing = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushing:
            torch.set_flush_denormal(False)


def write_results(out: Path | None, benchmark: str, data: Path, results: list[Any]) -> None:
    if out is None:
        return
    tmp = out.with_name(out.name + ".tmp")  # no half-written results file
    tmp.write_text(json.dumps({"benchmark": benchmark, "data": str(data),
                               "torch": torch.__version__, "results": results}, indent=1) + "\n")
    tmp.replace(out)
