"""experiments/peer_check.py (experiments/peer/) and benchmarks/peers/d3rlpy_config.py: the offrl
-> d3rlpy CQL mapping, resume decisions, the offrl side read from fake run folders, the report;
and a d3rlpy CQL smoke run scored by offrl's evaluator (skipped without .venv-d3rlpy)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from benchmarks.peers.d3rlpy_config import cql_kwargs, dt_kwargs, remaining_differences
from experiments.peer.algos import BC, CQL, DT
from experiments.peer.d3rlpy_side import needs_training, train_command
from experiments.peer.offrl_side import offrl_command, offrl_side
from experiments.peer.report import dataset_entry, markdown
from tests.script_helpers import load_experiment

REPO = Path(__file__).resolve().parents[1]
D3RLPY_PYTHON = REPO / ".venv-d3rlpy" / "bin" / "python"
CQL_CONFIG = yaml.safe_load((REPO / "experiments/configs/mujoco-cpu-cql.yaml").read_text())
DT_CONFIG = yaml.safe_load((REPO / "experiments/configs/mujoco-cpu-dt.yaml").read_text())


def test_cql_mapping_matches_the_suite_config() -> None:
    k = cql_kwargs(CQL_CONFIG["algo_config"], act_dim=3)
    assert k == {
        "batch_size": 256, "gamma": 0.99, "tau": 0.005, "n_critics": 2,
        "actor_hidden": [256, 256, 256], "critic_hidden": [256, 256, 256],
        "actor_learning_rate": 1e-4, "critic_learning_rate": 3e-4,
        "temp_learning_rate": 1e-4, "initial_temperature": 1.0, "n_action_samples": 10,
        "soft_q_backup": False, "max_q_backup": False,
        # fixed weight: d3rlpy's term = 5 * sum over critics of the gap, offrl's cql_loss
        "conservative_weight": 5.0, "initial_alpha": 1.0, "alpha_threshold": 0.0,
        "alpha_learning_rate": 0.0,
    }
    lag = cql_kwargs({**CQL_CONFIG["algo_config"], "lagrange": True, "backup_entropy": True}, 3)
    assert (lag["conservative_weight"], lag["initial_alpha"], lag["alpha_threshold"],
            lag["alpha_learning_rate"], lag["soft_q_backup"]) == (1.0, 5.0, 10.0, 3e-4, True)


def test_dt_mapping_matches_the_suite_config() -> None:
    k = dt_kwargs(DT_CONFIG["algo_config"], return_scale=1000.0, max_timestep=1000, act_dim=3)
    assert k == {
        "batch_size": 64, "context_size": 20, "embed_dim": 128, "num_layers": 3,
        "num_heads": 1, "attn_dropout": 0.1, "resid_dropout": 0.1, "embed_dropout": 0.1,
        "activation_type": "relu", "learning_rate": 1e-4, "weight_decay": 1e-4,
        "warmup_steps": 500, "clip_grad_norm": 0.75,  # d3rlpy's loss sums over the 3 dims
        "reward_scale": 0.001,
        "max_timestep": 1000,
    }
    own = dt_kwargs({**DT_CONFIG["algo_config"], "return_scale": 500.0, "max_timestep": 50},
                    1000.0, 1000, 3)
    assert (own["reward_scale"], own["max_timestep"]) == (0.002, 50)  # the config's own wins
    with pytest.raises(ValueError, match=r"no d3rlpy mapping: \['extra'\]"):
        dt_kwargs({**DT_CONFIG["algo_config"], "extra": 1}, 1000.0, 1000, 3)
    assert DT.stats == ("normalized_score", "return_mean", "train_loss_second_half",
                        "normalized_score_long")  # no single-step action MSE for DT


@pytest.mark.parametrize(("change", "match"), [
    ({"cql_temperature": 0.5}, "no logsumexp temperature"),
    ({"target_entropy": -1.0}, "targets -|A| = -3"),
    ({"new_knob": 1}, r"no d3rlpy mapping: \['new_knob'\]"),
])
def test_cql_mapping_refuses_what_d3rlpy_cannot_do(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cql_kwargs({**CQL_CONFIG["algo_config"], **change}, act_dim=3)
    cql_kwargs({**CQL_CONFIG["algo_config"], "target_entropy": -3.0}, act_dim=3)  # = -|A|: ok
    partial = dict(CQL_CONFIG["algo_config"])
    del partial["tau"]
    with pytest.raises(ValueError, match=r"lacks \['tau'\]"):
        cql_kwargs(partial, act_dim=3)


def test_remaining_differences_follow_the_config() -> None:
    bf16 = remaining_differences(CQL_CONFIG["algo_config"], "bf16")
    fp32 = remaining_differences(CQL_CONFIG["algo_config"], "fp32")
    assert any("bf16 autocast" in n for n in bf16) and not any("autocast" in n for n in fp32)
    assert any(n.startswith("TD target action") for n in fp32)
    soft = remaining_differences({**CQL_CONFIG["algo_config"], "backup_entropy": True}, "fp32")
    assert not any(n.startswith("TD target action") for n in soft)  # soft_q_backup matches it


def test_train_commands(tmp_path: Path) -> None:
    py, data, out = Path("py"), Path("d.hdf5"), Path("out")
    bc = train_command(BC, py, data, 20_000, 1, 1, out, None)
    assert bc == ["py", "benchmarks/peers/d3rlpy_train.py", "--data", "d.hdf5", "--algo", "bc",
                  "--steps", "20000", "--seed", "1", "--threads", "1", "--out", "out"]
    cql = train_command(CQL, py, data, 10_000, 0, 1, out, Path("c.json"))
    assert cql[-4:] == ["--config-json", "c.json", "--steps-per-epoch", "1000"]
    assert train_command(CQL, py, data, 300, 0, 1, out, None)[-1] == "300"  # short smoke runs
    off = offrl_command(CQL, "medium-replay", 2, tmp_path, SimpleNamespace(
        env="hopper", env_id="Hopper-v5", steps=10_000, episodes=10, envs=10,
        eval_seed=1_000_000, threads=1),
        "fp32")
    assert off[off.index("--config") + 1] == "experiments/configs/mujoco-cpu-cql.yaml"
    assert off[-2:] == ["--precision", "fp32"]
    assert "minari:offrl-mujoco/hopper/medium-replay-v0" in off


def test_needs_training_decisions(tmp_path: Path) -> None:
    kwargs = cql_kwargs(CQL_CONFIG["algo_config"], 3)
    assert needs_training(tmp_path, 10_000, kwargs)  # no peer.json
    (tmp_path / "peer.json").write_text(json.dumps({"steps": 10_000, "config_kwargs": kwargs}))
    assert not needs_training(tmp_path, 10_000, kwargs)
    with pytest.raises(SystemExit, match="has 10000 steps, expected 200"):
        needs_training(tmp_path, 200, kwargs)
    with pytest.raises(SystemExit, match="another d3rlpy configuration"):
        needs_training(tmp_path, 10_000, {**kwargs, "conservative_weight": 1.0})


def fake_offrl_run(run_dir: Path, seed: int, status: str = "finished", steps: int = 4000,
                   precision: str = "bf16") -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"precision": precision}))
    (run_dir / "summary.json").write_text(json.dumps({
        "status": status, "seed": seed, "step": steps, "train_time_s": 10.0,
        "final_eval": {"eval/return_mean": 1000.0 + seed, "eval/normalized_score": 30.0 + seed}}))
    rows = [{"step": s, "train/td_loss": float(s), "train/cql_gap": s / 1000,
             "train/alpha": 1 - s / 10_000} for s in (1000, 2000, 3000, 4000)]
    rows.insert(1, {"step": 1000, "eval/normalized_score": 5.0})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def peer_args(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(env="hopper", compare=tmp_path / "compare", work=tmp_path / "work",
                           seeds=3, steps=4000, offrl_train=False, env_id="Hopper-v5",
                           episodes=10, envs=10, eval_seed=1_000_000, threads=1)


def test_offrl_side_reads_finished_study_runs(tmp_path: Path) -> None:
    runs = tmp_path / "compare" / "hopper-medium" / "runs" / "cql"
    fake_offrl_run(runs / "seed0", 0)
    fake_offrl_run(runs / "seed1", 1, status="running")  # not finished: not used
    args = peer_args(tmp_path)
    (row,) = offrl_side(CQL, "medium", args)
    assert (row["seed"], row["normalized_score"], row["source"]) == (0, 30.0, "hopper study")
    assert row["td_loss_second_half"] == 3500.0  # the 3000 and 4000 interval means
    assert row["cql_gap_second_half"] == 3.5 and row["sac_alpha_last"] == pytest.approx(0.6)
    assert offrl_side(CQL, "medium", args, precision="fp32") == []  # the study ran bf16
    own = tmp_path / "work" / "hopper-medium" / "offrl-cql-fp32-seed2"  # trained by the check
    fake_offrl_run(own, 2, precision="fp32")
    (row,) = offrl_side(CQL, "medium", args, precision="fp32")
    assert row["seed"] == 2 and "--precision fp32" in row["command"]
    args.steps = 10_000
    with pytest.raises(SystemExit, match="4000 steps, expected 10000"):
        offrl_side(CQL, "medium", args)


def test_offrl_side_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="compare/hopper-medium: no such study folder"):
        offrl_side(CQL, "medium", peer_args(tmp_path))
    run = tmp_path / "compare" / "hopper-medium" / "runs" / "cql" / "seed0"
    fake_offrl_run(run, 0)
    (run / "metrics.jsonl").unlink()
    with pytest.raises(SystemExit, match="metrics.jsonl is missing"):
        offrl_side(CQL, "medium", peer_args(tmp_path))
    (run / "summary.json").write_text("{not json")
    with pytest.raises(SystemExit, match="unreadable offrl summary"):
        offrl_side(CQL, "medium", peer_args(tmp_path))


def d3rlpy_row(seed: int, score: float) -> dict:
    return {"seed": seed, "normalized_score": score, "return_mean": 30 * score,
            "train_wall_s": 100.0, "td_loss_second_half": 2.0, "cql_gap_second_half": 1.5,
            "sac_alpha_last": 0.5, "action_mse": 0.1, "normalized_score_long": score + 1}


def test_report_tables(tmp_path: Path) -> None:
    off = [{**d3rlpy_row(0, 40.0), "source": "hopper study", "train_time_s": 50.0}]
    entry = dataset_entry(CQL, "hopper-medium", "src", tmp_path / "x.hdf5",
                          [d3rlpy_row(0, 10.0), d3rlpy_row(1, 20.0)], off)
    assert entry["d3rlpy"]["normalized_score"] == {"n": 2, "mean": 15.0,
                                                   "std": pytest.approx(np.sqrt(50.0))}
    assert entry["offrl"]["normalized_score"]["std"] == 0.0  # one run
    empty = dataset_entry(CQL, "hopper-medium-replay", "src", tmp_path / "y.hdf5", [], [])
    report = {"algo": "cql", "steps": 10_000, "long_episodes": 50, "offrl_precision": "fp32",
              "protocol": {"env_id": "Hopper-v5", "episodes": 10, "num_envs": 10,
                           "eval_seed": 1_000_000},
              "datasets": [entry, empty], "commands": ["cmd"], "versions": {},
              "differences": ["TD target action: differs."]}
    md = markdown(report)
    assert "# Peer check: d3rlpy CQL vs offrl CQL, hopper" in md
    assert "offrl trained with precision fp32; d3rlpy in fp32." in md
    assert "| hopper-medium | 15.0 ± 7.1 (n=2) | 40.0 ± 0.0 (n=1) |" in md
    assert "| hopper-medium-replay | not run yet | not run yet |" in md
    assert "| dataset | d3rlpy TD loss | offrl TD loss | d3rlpy CQL gap |" in md
    assert "| hopper-medium | 1 | 20.0 | 100 | - | - | - |" in md  # d3rlpy only
    assert "- TD target action: differs." in md
    dt_run = {**d3rlpy_row(0, 10.0), "normalized_score_by_target": {"3600": 10.0, "1800": 8.0}}
    dt_entry = dataset_entry(DT, "hopper-medium", "src", tmp_path / "x.hdf5", [dt_run], [])
    dt = markdown({**report, "algo": "dt", "datasets": [dt_entry],
                   "protocol": {**report["protocol"], "targets": [3600.0, 1800.0]}})
    assert "| hopper-medium | 1800 | 8.0 ± 0.0 (n=1) | not run yet |" in dt
    assert "| dataset | d3rlpy loss | offrl loss |\n" in dt  # no action MSE columns
    bc_entry = dataset_entry(BC, "hopper-medium", "src", tmp_path / "x.hdf5", [], [])
    bc = markdown({**report, "algo": "bc", "datasets": [bc_entry], "differences": None})
    assert "| dataset | d3rlpy loss | offrl loss | d3rlpy action MSE | offrl action MSE |" in bc


@pytest.mark.slow
@pytest.mark.skipif(not D3RLPY_PYTHON.exists(), reason="no .venv-d3rlpy (make venv-d3rlpy)")
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_d3rlpy_cql_smoke_run_scored_by_offrl(tmp_path: Path) -> None:
    """d3rlpy_train.py --config-json trains CQL a few steps from the mapped config; the policy
    scores through offrl's evaluator and the diagnostics read back from d3rlpy's logs."""
    from benchmarks.peers.export_d4rl import export_d4rl
    from experiments.peer.d3rlpy_side import evaluate
    from offrl.datasets import EpisodeDataset
    from tests.data_helpers import random_episodes

    rng = np.random.default_rng(0)
    ds = EpisodeDataset.from_episodes(
        random_episodes(rng, [40, 30, 50], [True, False, True], obs_dim=11, act_dim=3))
    data = export_d4rl(ds, tmp_path / "tiny.hdf5")
    small = {**CQL_CONFIG["algo_config"], "actor_hidden": [16], "critic_hidden": [16],
             "batch_size": 8, "num_sampled_actions": 2}
    kwargs = cql_kwargs(small, act_dim=3)
    (tmp_path / "cql.json").write_text(json.dumps(kwargs))
    run = tmp_path / "run"
    cmd = train_command(CQL, D3RLPY_PYTHON, data, 4, 0, 1, run, tmp_path / "cql.json")
    cmd[cmd.index("--steps-per-epoch") + 1] = "2"
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not needs_training(run, 4, kwargs)
    meta = json.loads((run / "peer.json").read_text())
    assert meta["config"]["conservative_weight"] == 5.0 and meta["config"]["n_critics"] == 2
    assert meta["config"]["actor_encoder_factory"]["params"]["hidden_units"] == [16]
    diag = CQL.d3rlpy_diag(run, 4)
    assert all(np.isfinite(diag[k]) for k in CQL.diagnostics), diag
    protocol = {"env_id": "Hopper-v5", "episodes": 2, "num_envs": 2, "eval_seed": 7}
    res = evaluate(run, str(data), protocol)
    assert len(res["returns"]) == 2 and np.isfinite(res["normalized_score"])
    assert evaluate(run, str(data), protocol)["eval_s"] == res["eval_s"]  # cached


@pytest.mark.slow
@pytest.mark.skipif(not D3RLPY_PYTHON.exists(), reason="no .venv-d3rlpy (make venv-d3rlpy)")
def test_d3rlpy_dt_smoke_run_scored_through_its_stateful_wrapper(tmp_path: Path) -> None:
    """d3rlpy_train.py trains a tiny mapped DT; offrl's evaluator scores it at two targets
    with every action from d3rlpy's StatefulTransformerWrapper (d3rlpy_dt_actor.py)."""
    from benchmarks.peers.export_d4rl import export_d4rl
    from experiments.peer.d3rlpy_side import evaluate
    from offrl.datasets import EpisodeDataset
    from tests.data_helpers import random_episodes

    rng = np.random.default_rng(1)
    ds = EpisodeDataset.from_episodes(
        random_episodes(rng, [40, 30, 50], [True, False, True], obs_dim=11, act_dim=3))
    data = export_d4rl(ds, tmp_path / "tiny.hdf5")
    small = {**DT_CONFIG["algo_config"], "embed_dim": 16, "num_layers": 1, "context": 4,
             "batch_size": 4, "warmup_steps": 2}
    (tmp_path / "dt.json").write_text(json.dumps(dt_kwargs(small, 1000.0, 1000, 3)))
    run = tmp_path / "run"
    cmd = train_command(DT, D3RLPY_PYTHON, data, 4, 0, 1, run, tmp_path / "dt.json")
    cmd[cmd.index("--steps-per-epoch") + 1] = "2"
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (run / "model.d3").is_file() and not (run / "policy.pt").exists()
    assert np.isfinite(DT.d3rlpy_diag(run, 4)["train_loss_second_half"])
    protocol = {"env_id": "Hopper-v5", "episodes": 2, "num_envs": 2, "eval_seed": 7,
                "targets": [3600.0, 1800.0]}
    res = evaluate(run, str(data), protocol, d3rlpy_python=D3RLPY_PYTHON)
    assert list(res["by_target"]) == ["3600", "1800"] and len(res["returns"]) == 2
    assert res["normalized_score"] == res["by_target"]["3600"]["normalized_score"]


def test_main_no_train_writes_an_empty_cql_report(tmp_path: Path) -> None:
    """The CLI wiring without d3rlpy: defaults from the suite config (10k steps), the mapped
    d3rlpy arguments and the remaining differences in the report, nothing trained."""
    peer_check = load_experiment("peer_check")
    (tmp_path / "compare" / "hopper-medium").mkdir(parents=True)
    out = tmp_path / "cql.json"
    peer_check.main(["--algo", "cql", "--no-train", "--levels", "medium", "--offrl-precision",
                     "fp32", "--compare", str(tmp_path / "compare"), "--work",
                     str(tmp_path / "work"), "--out", str(out)])
    report = json.loads(out.read_text())
    assert (report["algo"], report["steps"], report["offrl_precision"]) == ("cql", 10_000, "fp32")
    assert report["d3rlpy_kwargs"] == cql_kwargs(CQL_CONFIG["algo_config"], 3)
    assert not any("autocast" in n for n in report["differences"])  # fp32 on both sides
    assert report["datasets"][0]["offrl"]["normalized_score"]["n"] == 0
    assert "| hopper-medium | not run yet | not run yet |" in out.with_suffix(".md").read_text()
    assert not (tmp_path / "work").exists()  # --no-train writes nothing there


def test_env_option_picks_env_id_study_and_names(tmp_path: Path) -> None:
    """--env halfcheetah / walker2d: their eval env, the mujoco study's folder, <env>-<level>
    dataset names and report title; explicit --env-id / --compare / --work still win."""
    peer_check = load_experiment("peer_check")
    args = peer_check.parse_args(["--env", "walker2d"])
    assert args.env_id == "Walker2d-v5"
    assert args.compare == REPO / "runs" / "compare" / "mujoco"
    assert args.work == REPO / "runs" / "peers" / "walker2d"
    assert peer_check.parse_args([]).compare == REPO / "runs" / "compare" / "hopper"
    assert peer_check.parse_args(["--env", "halfcheetah", "--env-id", "X-v0"]).env_id == "X-v0"
    (tmp_path / "compare" / "halfcheetah-medium-replay").mkdir(parents=True)
    out = tmp_path / "bc.json"
    peer_check.main(["--env", "halfcheetah", "--no-train", "--levels", "medium-replay",
                     "--compare", str(tmp_path / "compare"), "--work", str(tmp_path / "work"),
                     "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["env"] == "halfcheetah" and report["protocol"]["env_id"] == "HalfCheetah-v5"
    assert [d["name"] for d in report["datasets"]] == ["halfcheetah-medium-replay"]
    text = out.with_suffix(".md").read_text()
    assert text.startswith("# Peer check: d3rlpy BC vs offrl BC, halfcheetah")
