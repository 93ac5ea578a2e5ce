"""Behaviour-policy SAC trainer and the D4RL-style MuJoCo recipes (mechanics, determinism)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from offrl.algorithms.base import SpaceSpec
from offrl.algorithms.cql import TanhGaussianActor
from offrl.datasets import DatasetError, load_dataset, recipes
from offrl.datasets.behaviour import SACConfig, train_behaviour
from offrl.envs import env_spaces


@pytest.fixture
def policy_dir(tmp_path, monkeypatch):
    d = tmp_path / "policies"
    monkeypatch.setattr(recipes, "POLICY_DIR", d)
    return d


def test_sac_trains_snapshots_and_resumes(tmp_path):
    cfg = SACConfig(env_id="Pendulum-v1", total_steps=400, start_steps=100, batch_size=32,
                    hidden=(32, 32), snapshot_every=200, eval_episodes=1)
    out = train_behaviour(cfg, tmp_path / "run", log=lambda m: None)
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [200, 400]
    assert len(list((out / "snapshots").glob("step_*.pt"))) == 2
    replay = load_dataset(out / "replay.hdf5", env_id="Pendulum-v1")
    assert replay.num_steps == 400 and replay.truncated.sum() == 2  # 200-step time limit
    # Longer budget: resumes from the checkpoint instead of starting over.
    longer = SACConfig(**{**cfg.__dict__, "total_steps": 600})
    train_behaviour(longer, out, log=lambda m: None)
    assert [h["step"] for h in json.loads((out / "history.json").read_text())] == [200, 400, 600]
    with pytest.raises(ValueError, match="differs"):
        train_behaviour(SACConfig(**{**longer.__dict__, "lr": 1e-3}), out, log=lambda m: None)
    assert recipes.select_snapshot(out, None).name.startswith("step_")


def _random_snapshot(path, env_id="Hopper-v5", ret=1000.0, step=50):
    spaces = SpaceSpec.from_spaces(*env_spaces(env_id))
    actor = TanhGaussianActor(spaces.obs_dim, spaces.act_dim, (16, 16))
    torch.save({"env_id": env_id, "hidden": [16, 16], "spaces": spaces.to_dict(),
                "actor": actor.state_dict(), "step": step, "return_mean": ret,
                "return_std": 0.0}, path)
    return path


def test_recipes_are_deterministic_and_loadable(tmp_path, policy_dir):
    torch.manual_seed(0)
    recipes.promote_snapshot(_random_snapshot(tmp_path / "m.pt"), "hopper", "medium")
    recipes.promote_snapshot(_random_snapshot(tmp_path / "e.pt", ret=3000.0), "hopper", "expert")
    root = tmp_path / "minari"
    path = recipes.make_recipe("hopper", "medium", episodes=3, seed=7, root=root,
                               progress=False, num_envs=2)
    ds = load_dataset(path)
    assert ds.num_episodes == 3 and ds.meta.env_id == "Hopper-v5"
    assert ds.meta.ref_max_score == pytest.approx(3234.3)
    again = load_dataset(recipes.make_recipe("hopper", "medium", episodes=3, seed=7,
                                             root=root, force=True, progress=False, num_envs=2))
    np.testing.assert_array_equal(ds.actions, again.actions)
    np.testing.assert_array_equal(ds.observations, again.observations)
    other = load_dataset(recipes.make_recipe("hopper", "medium", episodes=3, seed=8, root=root,
                                             force=True, progress=False, num_envs=2))
    assert not np.array_equal(ds.actions[:5], other.actions[:5])
    me = load_dataset(recipes.make_recipe("hopper", "medium-expert", episodes=2, seed=0,
                                          root=root, progress=False, num_envs=2))
    assert me.num_episodes == 4
    with pytest.raises(DatasetError, match="exists"):
        recipes.make_recipe("hopper", "medium", episodes=1, root=root)


def test_medium_replay_is_the_buffer_up_to_the_medium_snapshot(tmp_path, policy_dir):
    cfg = SACConfig(env_id="Pendulum-v1", total_steps=300, start_steps=300, batch_size=16,
                    hidden=(16, 16), snapshot_every=150, eval_episodes=1)
    run = train_behaviour(cfg, tmp_path / "run", log=lambda m: None)
    first = sorted((run / "snapshots").glob("*.pt"))[0]  # step 150: mid-episode
    recipes.promote_snapshot(first, "hopper", "medium", replay=run / "replay.hdf5")
    shipped = load_dataset(policy_dir / "hopper-medium-replay.hdf5")
    assert shipped.num_steps == 150 and shipped.truncated.all()


def test_missing_policy_and_bad_names(tmp_path, policy_dir):
    with pytest.raises(DatasetError, match="no behaviour policy 'hopper-expert'"):
        recipes.make_recipe("hopper", "expert", episodes=1, root=tmp_path)
    with pytest.raises(DatasetError, match="unknown MuJoCo env"):
        recipes.make_recipe("ant", "medium", episodes=1, root=tmp_path)
    with pytest.raises(DatasetError, match="unknown level"):
        recipes.make_recipe("hopper", "mediocre", episodes=1, root=tmp_path)
    with pytest.raises(DatasetError, match="medium-replay.hdf5 is not shipped"):
        recipes.make_recipe("hopper", "medium-replay", episodes=1, root=tmp_path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DatasetError, match="cannot load behaviour policy"):
        recipes.load_behaviour_policy(bad)


def test_random_recipe(tmp_path, policy_dir):
    ds = load_dataset(recipes.make_recipe("hopper", "random", episodes=2, seed=0,
                                          root=tmp_path, progress=False))
    assert ds.num_episodes == 2 and (np.abs(ds.actions) <= 1).all()


def test_cli_collect_mujoco(tmp_path, capsys, policy_dir):
    from offrl.cli import main

    assert main(["collect", "mujoco", "--env", "hopper", "--level", "random", "--episodes", "2",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    assert "episodes 2" in capsys.readouterr().out
    assert main(["collect", "mujoco", "--level", "expert", "--out", str(tmp_path)]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["collect", "mujoco", "--help"])
    assert exc.value.code == 0


def test_promote_measures_candidates_and_records_stats(tmp_path, policy_dir, monkeypatch):
    from offrl.datasets import promote

    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    torch.manual_seed(0)
    for step, ret in ((10, 100.0), (20, 900.0), (30, 500.0)):
        _random_snapshot(run / "snapshots" / f"step_{step:08d}.pt", ret=ret, step=step)
    measured = {"step_00000010.pt": 80.0, "step_00000020.pt": 300.0, "step_00000030.pt": 420.0}
    monkeypatch.setattr(promote, "stochastic_return",
                        lambda snap, episodes, seed=0: (measured[Path(snap).name], 1.0))
    # expert: the best STOCHASTIC return among the 2 best deterministic snapshots.
    snap, stats = promote.choose(run, "hopper", "expert", 1 / 3, 3, 2, log=lambda m: None)
    assert snap.name == "step_00000030.pt" and stats["stochastic_return_mean"] == 420.0
    # medium: stochastic return closest to fraction x D4RL's expert score (0.1 x 3234 = 323).
    snap, _ = promote.choose(run, "hopper", "medium", 0.1, 3, 3, log=lambda m: None)
    assert snap.name == "step_00000020.pt"
    promote.main(["--run", str(run), "--env", "hopper", "--level", "expert", "--candidates",
                  "2", "--episodes", "3"])
    with pytest.raises(SystemExit, match="no snapshots"):
        promote.main(["--run", str(tmp_path / "none"), "--env", "hopper", "--level", "expert"])
    shipped = torch.load(policy_dir / "hopper-expert.pt", weights_only=False)
    assert shipped["step"] == 30 and shipped["level"] == "expert"
    assert shipped["stochastic_return_mean"] == 420.0 and shipped["stochastic_episodes"] == 3


def test_stochastic_return_is_seeded(tmp_path):
    from offrl.datasets.promote import stochastic_return

    snap = _random_snapshot(tmp_path / "s.pt")
    assert stochastic_return(snap, 2, seed=1) == stochastic_return(snap, 2, seed=1)
