"""experiments/return_conditioning.py: a tiny DT trained a few steps with the real trainer on
CartPole data, swept at two targets over two run folders; the JSON's fields and statistics,
the shared episode seeds, the PNG, the default grids, and the refusal of an unfinished run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from offrl.cli import main as cli
from tests.script_helpers import load_experiment
from tests.trainer_helpers import (
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    write_cartpole_pickle,
)

rc = load_experiment("return_conditioning")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("rc")
    data = write_cartpole_pickle(tmp / "cp.pkl", 12)
    out = []
    for seed in (0, 1):
        run = tmp / f"dt{seed}"
        code = cli(["train", "--algo", "dt", "--dataset", str(data), "--env", "CartPole-v1",
                    "--steps", "6", "--checkpoint-every", "3", "--eval-every", "0",
                    "--context", "4", "--embed-dim", "16", "--num-layers", "1",
                    "--batch-size", "8", "--seed", str(seed), "--device", "cpu",
                    "--num-eval-episodes", "1",
                    "--run-dir", str(run), "--no-progress"])
        assert code == 0
        out.append(run)
    return out


def test_sweep_writes_json_and_png(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert rc.main([*map(str, runs), "--out", str(out), "--targets", "20", "150",
                    "--episodes", "3", "--num-envs", "2",
                    "--cache", str(tmp_path / "cache")]) == 0
    report = json.loads((out / "return_conditioning.json").read_text())
    png = out / "return_conditioning.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert report["env_id"] == "CartPole-v1" and report["targets"] == [20.0, 150.0]
    assert report["achieved"] == "return_mean"  # CartPole reports no success
    assert report["protocol"]["episodes"] == 3 and report["protocol"]["kv_cache"] is False
    assert "experiments/return_conditioning.py" in report["commands"][0]
    assert report["dataset"]["episodes"] == 12
    assert len(report["runs"]) == 2
    for run in report["runs"]:
        assert run["step"] == 6 and run["final"] and run["checkpoint"].endswith("ckpt_6.pt")
        assert run["episode_seeds"] == [1_000_000, 1_000_001, 1_000_002]
        assert [t["target"] for t in run["targets"]] == [20.0, 150.0]
        for t in run["targets"]:
            assert len(t["returns"]) == 3
            assert t["achieved"] == pytest.approx(np.mean(t["returns"]))
    assert [r["train_seed"] for r in report["runs"]] == [0, 1]
    for i, row in enumerate(report["summary"]):
        per_seed = [r["targets"][i]["achieved"] for r in report["runs"]]
        assert row["achieved_per_seed"] == per_seed
        assert row["achieved_mean"] == pytest.approx(np.mean(per_seed))
        assert row["achieved_std"] == pytest.approx(np.std(per_seed, ddof=1))
    # a second sweep reuses the per-run results; another grid evaluates again
    assert rc.main([*map(str, runs), "--out", str(out), "--targets", "20", "150",
                    "--episodes", "3", "--num-envs", "2",
                    "--cache", str(tmp_path / "cache")]) == 0
    again = json.loads((out / "return_conditioning.json").read_text())
    assert all(r["cached"] for r in again["runs"]) and again["summary"] == report["summary"]
    assert rc.main([str(runs[0]), "--out", str(out), "--targets", "20",
                    "--episodes", "3", "--num-envs", "2",
                    "--cache", str(tmp_path / "cache")]) == 0
    third = json.loads((out / "return_conditioning.json").read_text())
    assert "cached" not in third["runs"][0] and third["targets"] == [20.0]
    assert third["runs"][0]["targets"][0]["returns"] == report["runs"][0]["targets"][0]["returns"]


def test_unfinished_run_is_refused(runs: list[Path], tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(runs[0], run)
    (run / "summary.json").unlink()
    with pytest.raises(SystemExit, match="not finished"):
        rc.main([str(run), "--out", str(tmp_path / "o"), "--targets", "1",
                 "--cache", str(tmp_path / "cache")])


def test_default_grids() -> None:
    assert rc.default_targets("offrl/KeyToDoor-v0", np.array([0.0, 1.0])) == [
        0.0, 0.25, 0.5, 0.75, 1.0]
    grid = rc.default_targets("Hopper-v5", np.array([100.0, 3200.0]))
    assert grid == [500.0 * i for i in range(10)]  # 1.2 * 3200 / 9 = 427 -> step 500
    assert rc.nice_step(0.07) == pytest.approx(0.1) and rc.nice_step(230) == 250
