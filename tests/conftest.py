"""Shared fixtures: the optional real-data folder and per-test Minari/D4RL cache isolation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture
def real_data() -> Path:
    """../shared/data/real (small datasets published by other projects); skip when absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real datasets not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The test models are tiny: intra-op threads only add synchronization, and on a loaded
    2-core machine oversubscribed OpenMP threads made tests 10-20x slower. Restored after
    each test, so a test that sets its own thread count cannot leak it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch) -> None:
    """Never read or write the user's ~/.minari or ~/.d4rl from a test."""
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(root / "d4rl"))
