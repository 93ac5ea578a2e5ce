"""experiments/decision_margins.py: a tiny CartPole DT (two checkpoints of one run) acts on
the same episodes; rows per checkpoint, only the recorded episodes' steps scored (checked
against an independent evaluation), probabilities in range, and the refusal of a non-DT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from offrl.algorithms.dt import DTPolicy
from offrl.checkpoint import load_checkpoint, restore_algorithm
from offrl.cli import main as cli
from offrl.evaluator import Evaluator
from tests.script_helpers import load_experiment
from tests.trainer_helpers import (
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    write_cartpole_pickle,
)

dm = load_experiment("decision_margins")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_cartpole_pickle(tmp_path_factory.mktemp("dm") / "cp.pkl", 12)


def train(data: Path, run: Path, algo: str) -> Path:
    extra = (["--context", "4", "--embed-dim", "16", "--num-layers", "1"] if algo == "dt"
             else [])
    code = cli(["train", "--algo", algo, "--dataset", str(data), "--env", "CartPole-v1",
                "--steps", "6", "--checkpoint-every", "3", "--eval-every", "0",
                "--batch-size", "8", "--device", "cpu", "--num-eval-episodes", "1",
                *extra, "--run-dir", str(run), "--no-progress"])
    assert code == 0
    return run


def test_margins_per_checkpoint(data: Path, tmp_path: Path) -> None:
    run = train(data, tmp_path / "dt", "dt")
    out = tmp_path / "m.json"
    assert dm.main([str(run), "--target", "150", "--episodes", "3", "--envs", "2",
                    "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["step"] for r in rows] == [3, 6]
    for r in rows:
        assert 0.5 <= r["top1_prob_median"] <= 1.0 and r["uniform_prob"] == 0.5
        assert 0.0 <= r["gap_median"] <= 1.0 and 0.0 <= r["near_tie_share"] <= 1.0
    # Scored steps are those of the 3 recorded episodes: the same policy, evaluated again.
    ckpt = Path(rows[1]["checkpoint"])
    payload = load_checkpoint(ckpt)
    algo = restore_algorithm(payload, "cpu", ckpt)
    calls = []
    policy = DTPolicy(algo, 2)
    policy.on_prediction = lambda logits: calls.append(logits.shape)
    with Evaluator("CartPole-v1", 2) as ev:
        (res,) = ev.evaluate(policy, 3, target_returns=(150.0,), seed=1_000_000)
    assert rows[1]["steps_scored"] == int(res.lengths.sum()) <= 2 * len(calls)
    assert all(shape == torch.Size([2, 2]) for shape in calls)  # logits (N, n) per act
    assert rows[1]["return_mean"] == pytest.approx(float(np.mean(res.returns)))


def test_refuses_a_non_dt_checkpoint(data: Path, tmp_path: Path) -> None:
    run = train(data, tmp_path / "bc", "bc")
    with pytest.raises(SystemExit, match="discrete-action DT checkpoint is needed"):
        dm.main([str(run), "--target", "1", "--episodes", "1"])
    with pytest.raises(SystemExit, match="no such checkpoint"):
        dm.main([str(tmp_path / "missing"), "--target", "1"])
