"""Shared fixtures: the optional real-data folder and per-test Minari/D4RL cache isolation."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture
def real_data() -> Path:
    """../shared/data/real (small datasets published by other projects); skip when absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real datasets not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch) -> None:
    """Never read or write the user's ~/.minari or ~/.d4rl from a test."""
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(root / "d4rl"))
