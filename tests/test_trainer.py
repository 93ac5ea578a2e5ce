"""Trainer: cadence, metrics files, checkpoint contents and atomicity, keep-last-N + best,
exact resume after SIGKILL, divergence stop, corrupt/incompatible checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from offrl.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_save,
    load_checkpoint,
    periodic_checkpoints,
    resolve_checkpoint,
)
from offrl.config import ConfigError, RunConfig, from_dict, load_yaml
from offrl.evaluator import EvalResult, evaluate_checkpoint
from offrl.logging import read_jsonl
from offrl.trainer import NonFiniteMetricError, Trainer, train
from tests.trainer_helpers import (  # noqa: F401  (restore_torch_threads: autouse fixture)
    LINEAR_BC,
    LinearBCConfig,
    parameters,
    restore_torch_threads,
    write_cartpole_pickle,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory) -> Path:
    return write_cartpole_pickle(tmp_path_factory.mktemp("data") / "cartpole.pkl", 12)


def make_config(dataset: Path, run_dir: Path, **kw) -> RunConfig:
    base = dict(algo=LINEAR_BC, dataset=str(dataset), env_id="CartPole-v1", seed=3,
                total_steps=50, log_every=10, eval_every=25, num_eval_episodes=2,
                num_eval_envs=2, checkpoint_every=20, keep_checkpoints=2, device="cpu",
                num_threads=1, run_dir=str(run_dir))  # tiny nets: threads only add overhead
    base.update(kw)
    return RunConfig(**base)


def test_cadence_and_run_files(cartpole: Path, tmp_path: Path) -> None:
    cfg = make_config(cartpole, tmp_path / "run")
    result = train(cfg, progress=False)
    run = result.run_dir
    rows = read_jsonl(run / "metrics.jsonl")
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    eval_steps = [r["step"] for r in rows if "eval/none/return_mean" in r]
    assert train_steps == [10, 20, 30, 40, 50] and eval_steps == [25, 50]
    assert all(r["time/updates_per_s"] > 0 and r["time/update_ms"] > 0
               for r in rows if "train/loss" in r)
    assert {"eval/return_mean", "time/eval_s"} <= set(rows[-1])
    # keep_checkpoints=2 of ckpt 20, 40, 50 (the last step always checkpoints) + best.pt
    assert [s for s, _ in periodic_checkpoints(run / "checkpoints")] == [40, 50]
    assert (run / "checkpoints" / "best.pt").is_file()
    assert not list((run / "checkpoints").glob(".*"))  # no temp files left
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 50
    assert summary["final_eval"]["eval/none/return_mean"] == result.final_eval[
        "eval/none/return_mean"]
    assert load_yaml(run / "config.yaml") == cfg
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "eval/none/return_mean", "time/updates_per_s"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == train_steps
    assert "config/text_summary" in events.Tags()["tensors"]


def test_checkpoint_contents_and_evaluation_from_it_alone(cartpole: Path, tmp_path: Path
                                                          ) -> None:
    cfg = make_config(cartpole, tmp_path / "run", total_steps=20, eval_every=0)
    result = train(cfg, progress=False)
    path = resolve_checkpoint(result.run_dir)
    assert path.name == "ckpt_20.pt"
    payload = load_checkpoint(path)
    assert payload["format"] == FORMAT and payload["step"] == 20
    assert payload["algo"] == LINEAR_BC
    assert from_dict(payload["run_config"]) == cfg
    assert set(payload["versions"]) >= {"offrl", "torch", "numpy", "gymnasium", "python"}
    assert set(payload["rng"]) >= {"torch", "numpy", "python"}
    assert "generator" in payload["sampler"] and payload["algorithm"]["num_updates"] == 20
    assert payload["env_id"] == "CartPole-v1" and payload["eval_targets"] == [None]
    # The checkpoint alone (dataset deleted) evaluates to the run's own final numbers.
    copy = tmp_path / "elsewhere.pt"
    copy.write_bytes(path.read_bytes())
    (results,), meta = evaluate_checkpoint(copy)
    assert meta["step"] == 20
    assert results.summary()["return_mean"] == result.final_eval["eval/none/return_mean"]


def test_atomic_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    good = atomic_save({"format": FORMAT, "x": 1}, tmp_path / "ckpt_1.pt")
    before = good.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"x": 2}, tmp_path / "ckpt_1.pt")
    with pytest.raises(OSError):
        atomic_save({"x": 2}, tmp_path / "ckpt_2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_1.pt"]
    assert good.read_bytes() == before


class ScriptedScores(Trainer):
    """Evaluation returns a chosen score per step (to test best-checkpoint selection)."""

    scores = {10: 1.0, 20: 5.0, 30: 2.0, 40: 4.0}

    def evaluate(self) -> list[EvalResult]:
        r = np.array([self.scores[self.step]])
        return [EvalResult(None, np.zeros(1, np.int64), r, np.ones(1, np.int64), None)]


def test_keep_last_n_and_best(cartpole: Path, tmp_path: Path) -> None:
    cfg = make_config(cartpole, tmp_path / "run", total_steps=40, eval_every=10,
                      checkpoint_every=10, keep_checkpoints=1)
    ScriptedScores(cfg, progress=False).run()
    folder = tmp_path / "run" / "checkpoints"
    assert [s for s, _ in periodic_checkpoints(folder)] == [40]
    best = load_checkpoint(folder / "best.pt")
    assert best["step"] == 20 and best["trainer"]["best_score"] == 5.0


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from offrl.config import from_dict
    from offrl.trainer import Trainer
    cfg = from_dict({cfg!r})

    def kill(trainer, step):
        if step == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer(cfg, progress=False, hooks=[kill]).run()
""")


def test_resume_after_sigkill_is_exact(cartpole: Path, tmp_path: Path) -> None:
    from offrl.config import to_dict

    kw = dict(total_steps=300, log_every=20, eval_every=100, checkpoint_every=25)
    reference = Trainer(make_config(cartpole, tmp_path / "ref", **kw), progress=False)
    reference.run()

    cfg = make_config(cartpole, tmp_path / "killed", **kw)
    script = KILLED_RUN.format(root=str(ROOT), cfg=to_dict(cfg), kill_at=163)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert resolve_checkpoint(tmp_path / "killed").name == "ckpt_150.pt"
    # The killed process logged step 160; resuming from 150 must drop it and redo it.
    resumed = Trainer(resume=tmp_path / "killed", progress=False)
    assert resumed.step == 150
    result = resumed.run()
    assert result.step == 300

    ref_params, got = parameters(reference.algorithm), parameters(resumed.algorithm)
    assert ref_params.keys() == got.keys() and len(got) >= 4  # weights, biases, Adam moments
    for name, tensor in ref_params.items():
        assert torch.equal(tensor, got[name]), name

    def train_rows(run: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.startswith("time/")}
                for r in read_jsonl(run / "metrics.jsonl")]

    assert train_rows(tmp_path / "killed") == train_rows(tmp_path / "ref")


def test_resume_can_extend_but_not_change_the_run(cartpole: Path, tmp_path: Path) -> None:
    cfg = make_config(cartpole, tmp_path / "run", total_steps=20, eval_every=0)
    train(cfg, progress=False)
    longer = dataclasses.replace(cfg, total_steps=40)
    assert train(longer, resume=tmp_path / "run", progress=False).step == 40
    assert load_yaml(tmp_path / "run" / "config.yaml").total_steps == 40
    other = dataclasses.replace(cfg, algo_config=LinearBCConfig(lr=0.5))
    with pytest.raises(ConfigError, match="algo_config"):
        Trainer(other, resume=tmp_path / "run")
    with pytest.raises(ConfigError, match="seed"):
        Trainer(dataclasses.replace(cfg, seed=4), resume=tmp_path / "run")
    with pytest.raises(ConfigError, match="not empty"):
        Trainer(cfg)  # a fresh run may not overwrite an existing run folder
    with pytest.raises(ConfigError, match="is older than ckpt_40.pt"):
        Trainer(resume=tmp_path / "run" / "checkpoints" / "ckpt_20.pt")


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(cartpole: Path, tmp_path: Path
                                                              ) -> None:
    cfg = make_config(cartpole, tmp_path / "run", total_steps=100, eval_every=0,
                      checkpoint_every=10, keep_checkpoints=5,
                      algo_config=LinearBCConfig(nan_at_step=35))
    with pytest.raises(NonFiniteMetricError, match=r"'train/loss' became nan at step 35") as err:
        train(cfg, progress=False)
    assert err.value.checkpoint is not None and err.value.checkpoint.name == "ckpt_30.pt"
    assert "ckpt_30.pt" in str(err.value)
    assert resolve_checkpoint(tmp_path / "run").name == "ckpt_30.pt"
    payload = load_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt_30.pt")
    assert all(torch.isfinite(t).all() for t in payload["algorithm"]["net"].values())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "step 35" in summary["error"]


def test_corrupt_and_incompatible_checkpoints(cartpole: Path, tmp_path: Path) -> None:
    cfg = make_config(cartpole, tmp_path / "run", total_steps=10, eval_every=0)
    train(cfg, progress=False)
    good = tmp_path / "run" / "checkpoints" / "ckpt_10.pt"
    data = good.read_bytes()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(300))
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")

    payload = torch.load(good, weights_only=False)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": payload["algorithm"]["net"]}, foreign)
    with pytest.raises(CheckpointError, match="not an offrl checkpoint"):
        load_checkpoint(foreign)
    future = tmp_path / "future.pt"
    torch.save({**payload, "format_version": 99}, future)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(future)
    # Weights of another shape (another observation size) do not fit the algorithm.
    algo_state = {**payload["algorithm"],
                  "net": {"weight": torch.zeros(2, 5), "bias": torch.zeros(2)}}
    misfit = tmp_path / "misfit" / "checkpoints" / "ckpt_10.pt"
    misfit.parent.mkdir(parents=True)
    torch.save({**payload, "algorithm": algo_state}, misfit)
    with pytest.raises(CheckpointError, match="does not fit"):
        Trainer(resume=misfit, progress=False)
    with pytest.raises(CheckpointError, match="does not fit"):
        evaluate_checkpoint(misfit)
    # A checkpoint of another algorithm.
    other = tmp_path / "other" / "checkpoints" / "ckpt_10.pt"
    other.parent.mkdir(parents=True)
    torch.save({**payload, "algo": "tests.trainer_helpers:NoSuchAlgo"}, other)
    with pytest.raises(CheckpointError, match="NoSuchAlgo"):
        evaluate_checkpoint(other)


def test_bad_env_fails_before_the_run_folder_exists(cartpole: Path, tmp_path: Path) -> None:
    from offrl.datasets import DatasetError

    with pytest.raises(DatasetError, match="NoSuchEnv-v0"):
        Trainer(make_config(cartpole, tmp_path / "run", env_id="NoSuchEnv-v0"))
    assert not (tmp_path / "run").exists()


def test_yaml_config_errors_name_the_file_and_key(tmp_path: Path, cartpole: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"algo": LINEAR_BC, "dataset": str(cartpole),
                                    "total_step": 5}))
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key\(s\) \['total_step'\]"):
        load_yaml(path)
    path.write_text(yaml.safe_dump({"algo": LINEAR_BC, "algo_config": {"lr": "fast"}}))
    with pytest.raises(ConfigError, match="algo_config.lr: expected a number"):
        load_yaml(path)
    path.write_text(yaml.safe_dump({"algo": LINEAR_BC, "target_returns": [1, 2],
                                    "algo_config": {"lr": 1}}))
    cfg = load_yaml(path)
    assert cfg.target_returns == (1.0, 2.0) and cfg.algo_config.lr == 1.0
    with pytest.raises(ConfigError, match="unknown algo 'nope'"):
        RunConfig(algo="nope")
    with pytest.raises(ConfigError, match="total_steps must be >= 1"):
        RunConfig(algo=LINEAR_BC, total_steps=0)


def test_delayed_reward_run_trains_and_evaluates_delayed(cartpole: Path, tmp_path: Path
                                                         ) -> None:
    from offrl.envs import DelayedReward

    cfg = make_config(cartpole, tmp_path / "run", total_steps=10, eval_every=0,
                      reward="delayed")
    trainer = Trainer(cfg, progress=False)
    try:
        ds = trainer.dataset
        last = ds.episode_starts[1:] - 1
        assert (np.delete(ds.rewards, last) == 0).all() and (ds.rewards[last] > 0).all()
        assert all(isinstance(e, DelayedReward) for e in trainer.evaluator.envs.envs)
        result = trainer.run()
    finally:
        trainer.close()
    dense = make_config(cartpole, tmp_path / "dense", total_steps=10, eval_every=0)
    # Same seed, same data order, same policy: only the timing of the reward differs, so the
    # episode returns of the final evaluation are equal.
    assert result.final_eval["eval/none/return_mean"] == train(dense, progress=False
                                                               ).final_eval["eval/none/return_mean"]
    (res,), _ = evaluate_checkpoint(result.run_dir)
    assert res.summary()["return_mean"] == result.final_eval["eval/none/return_mean"]


def _flushes() -> bool:
    """Whether this thread flushes subnormals: 1e-39 (subnormal in float32) times one."""
    return float(torch.tensor(1e-39, dtype=torch.float32) * 1.0) == 0.0


@pytest.mark.parametrize("flush", [True, False])
def test_flush_denormal_holds_during_the_run_and_ends_with_it(cartpole: Path, tmp_path: Path,
                                                              flush: bool) -> None:
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero control")
    assert not _flushes()
    seen = []
    cfg = make_config(cartpole, tmp_path / "run", total_steps=5, eval_every=0,
                      num_eval_episodes=0, flush_denormal=flush)
    Trainer(cfg, progress=False, hooks=[lambda trainer, step: seen.append(_flushes())]).run()
    assert seen == [flush] * 5
    assert not _flushes()  # the process default again
