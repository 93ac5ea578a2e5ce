"""experiments/precision_check.py on synthetic run folders: the curves and loss differences
it reports are recomputed here by hand, and a run with the wrong precision is refused."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "precision_check.py"
spec = importlib.util.spec_from_file_location("precision_check", SCRIPT)
pc = importlib.util.module_from_spec(spec)
sys.modules["precision_check"] = pc
spec.loader.exec_module(pc)


def fake_run(folder: Path, seed: int, precision: str, losses: list[float],
             scores: list[float], loss_key: str = "train/loss") -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"status": "finished", "updates_per_s": 5.0}))
    (folder / "config.yaml").write_text(f"seed: {seed}\nprecision: {precision}\n")
    rows = [{"step": 10 * (i + 1), loss_key: v} for i, v in enumerate(losses)]
    rows += [{"step": 10 * (i + 1), "eval/normalized_score": v} for i, v in enumerate(scores)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_precision_check_numbers(tmp_path, monkeypatch) -> None:
    fp32 = [fake_run(tmp_path / "a0", 0, "fp32", [1.0, 0.5], [10.0, 20.0]),
            fake_run(tmp_path / "a1", 1, "fp32", [2.0, 1.0], [30.0, 40.0])]
    bf16 = [fake_run(tmp_path / "b0", 0, "bf16", [1.1, 0.5], [12.0, 26.0]),
            fake_run(tmp_path / "b1", 1, "bf16", [2.0, 0.9], [28.0, 30.0])]
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["x", "--fp32", *map(str, fp32), "--bf16", *map(str, bf16),
                                      "--out", str(out)])
    pc.main()
    result = json.loads((out / "precision_check.json").read_text())
    assert (out / "precision_check.png").stat().st_size > 0
    last = result["eval_curves"][-1]
    assert last["step"] == 20
    assert last["fp32"]["mean"] == pytest.approx(30.0)
    assert last["fp32"]["std"] == pytest.approx(14.1421356, rel=1e-6)  # sample std of 20, 40
    assert last["bf16"]["mean"] == pytest.approx(28.0)
    pairs = {p["seed"]: p for p in result["loss_pairs"]}
    assert pairs[0]["mean_rel_loss_diff"] == pytest.approx((0.1 / 1.0 + 0.0) / 2)
    assert pairs[1]["mean_rel_loss_diff"] == pytest.approx((0.0 + 0.1 / 1.0) / 2)


def test_precision_check_refuses_wrong_precision(tmp_path, monkeypatch) -> None:
    a = fake_run(tmp_path / "a", 0, "bf16", [1.0], [1.0])
    b = fake_run(tmp_path / "b", 0, "bf16", [1.0], [1.0])
    monkeypatch.setattr(sys, "argv", ["x", "--fp32", str(a), "--bf16", str(b),
                                      "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="another precision"):
        pc.main()


def test_precision_check_names_a_missing_run(tmp_path, monkeypatch) -> None:
    b = fake_run(tmp_path / "b", 0, "bf16", [1.0], [1.0])
    monkeypatch.setattr(sys, "argv", ["x", "--fp32", str(tmp_path / "nope"), "--bf16", str(b),
                                      "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="nope: not a finished run folder"):
        pc.main()


def test_precision_check_reads_cql_critic_loss(tmp_path) -> None:
    run = pc.read_run(fake_run(tmp_path / "c", 0, "fp32", [4.0, 3.0], [1.0, 2.0],
                               loss_key="train/critic_loss"))
    assert run["loss"] == {10: 4.0, 20: 3.0} and run["score"] == {10: 1.0, 20: 2.0}
