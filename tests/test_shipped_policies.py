"""Every behaviour policy shipped in envs/policies/ loads and reaches the stochastic return
recorded in it when it was promoted (offrl.datasets.promote), on the same env seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from offrl.datasets.promote import stochastic_return
from offrl.datasets.recipes import POLICY_DIR, load_behaviour_policy

SHIPPED = sorted(POLICY_DIR.glob("*.pt"))


def test_medium_policies_come_with_their_replay_buffer() -> None:
    assert any(p.stem == "hopper-medium" for p in SHIPPED)
    for p in SHIPPED:
        if p.stem.endswith("-medium"):
            assert (POLICY_DIR / f"{p.stem}-replay.hdf5").exists(), p.stem


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_policy_reaches_recorded_return(path: Path) -> None:
    snap = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("stochastic_return_mean", "stochastic_return_std", "stochastic_episodes",
                "stochastic_seed", "level"):
        assert key in snap, f"{path.name} lacks '{key}' (promote it with offrl.datasets.promote)"
    assert path.stem.endswith(snap["level"])
    policy = load_behaviour_policy(path.stem, num_envs=1)
    assert policy.env_id in ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
    # The same seeds as at promotion, fewer episodes (a short check): within 3 standard
    # errors of the recorded mean, or 5% of it (the CPU's float rounding may differ).
    n = min(4, snap["stochastic_episodes"])
    mean, _ = stochastic_return(path, n, seed=snap["stochastic_seed"])
    recorded, std = snap["stochastic_return_mean"], snap["stochastic_return_std"]
    tol = max(3 * std / np.sqrt(n), 0.05 * abs(recorded))
    assert abs(mean - recorded) <= tol, (path.name, mean, recorded, tol)
