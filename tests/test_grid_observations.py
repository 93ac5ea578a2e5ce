"""Datasets with multi-dimensional observations (Key-to-Door's (5, 7, 7) grid) train with
every algorithm and evaluate in the env they were recorded in (its Minari env kwargs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from offrl.algorithms import ALGORITHMS
from offrl.config import RunConfig, env_kwargs
from offrl.datasets import EpisodeDataset, SequenceSampler, TransitionSampler, load_dataset
from offrl.datasets.collect import collect_dataset
from offrl.datasets.core import DatasetError
from offrl.datasets.minari_io import write_minari
from offrl.envs.key_to_door import ENV_ID, MEMORY_ENV_ID
from offrl.evaluator import evaluate_checkpoint
from offrl.trainer import Trainer
from offrl.types import Episode
from tests.algo_helpers import tiny_config

GRID = (5, 7, 7)
NAMES = sorted(ALGORITHMS)


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory) -> Path:
    """Four random-walk episodes of Key-to-Door recorded with obs_mode='grid'."""
    root = tmp_path_factory.mktemp("minari")
    path, _ = collect_dataset("keytodoor/grid-test-v0", ENV_ID, "random", 4, seed=0, root=root,
                              env_kwargs={"obs_mode": "grid"}, progress=False)
    return path


def test_minari_loader_keeps_recorded_env_kwargs(grid_dir: Path) -> None:
    ds = load_dataset(grid_dir)
    assert ds.meta.env_id == ENV_ID and ds.meta.env_kwargs == {"obs_mode": "grid"}
    assert ds.observations.shape[1:] == GRID
    # The env's own spaces were applied, made with the recorded kwargs (bounds [0, 1]).
    assert ds.observation_space.shape == GRID and float(ds.observation_space.high.max()) == 1.0
    assert load_dataset(grid_dir, env_id=ENV_ID).meta.env_kwargs == {"obs_mode": "grid"}
    # Another env id: the recorded kwargs do not apply, and its shape does not fit the data.
    with pytest.raises(DatasetError, match=r"\(5, 7, 7\).*KeyToDoorMemory-v0.*\(7,\)"):
        load_dataset(grid_dir, env_id=MEMORY_ENV_ID)


def test_env_kwargs_merge_config_wins() -> None:
    cfg = RunConfig(algo="bc", reward="delayed")
    assert env_kwargs(cfg, {"obs_mode": "grid", "reward": "dense"}) == {
        "obs_mode": "grid", "reward": "delayed"}
    assert env_kwargs(RunConfig(algo="bc")) == {}  # the vector path: no kwargs, as before


def test_samplers_keep_the_observation_shape(grid_dir: Path) -> None:
    ds = load_dataset(grid_dir)
    tb = TransitionSampler(ds, batch_size=16, seed=0).sample()
    assert tb.observations.shape == (16, *GRID) == tb.next_observations.shape
    sampler = SequenceSampler(ds, batch_size=16, context=6, seed=0)
    end = torch.tensor([0, 1, 5, ds.num_steps - 1])
    sb = sampler.gather(end)
    assert sb.states.shape == (4, 6, *GRID)
    obs = torch.as_tensor(ds.step_observations)
    for b, g in enumerate(end.tolist()):
        for k in range(6):
            want = obs[g - 5 + k] if sb.mask[b, k] else torch.zeros(GRID)
            assert torch.equal(sb.states[b, k], want)
    assert not sb.mask[0, :5].any() and sb.mask[0, 5]


@pytest.mark.parametrize("name", NAMES)
def test_train_and_evaluate_on_the_grid_env(name: str, grid_dir: Path, tmp_path: Path) -> None:
    """A few updates, then the trainer's evaluation on the grid env and `offrl eval`'s
    reproduction of it from the checkpoint alone."""
    cfg = RunConfig(algo=name, dataset=str(grid_dir), total_steps=3, log_every=3,
                    eval_every=0, num_eval_episodes=2, num_eval_envs=2, device="cpu",
                    run_dir=str(tmp_path / "run"), algo_config=tiny_config(name))
    trainer = Trainer(cfg, progress=False)
    assert trainer.evaluator.observation_shape == GRID
    assert trainer.evaluator.env_kwargs == {"obs_mode": "grid"}
    algo = trainer.algorithm
    assert algo.spaces.obs_shape == GRID and algo.spaces.discrete  # CQL dispatches to discrete
    batch = trainer.sampler.sample()
    raw = batch.states if name == "dt" else batch.observations
    if getattr(batch, "prepared", False):  # BC's sampler normalized and flattened them
        assert raw.shape[1:] == (int(np.prod(GRID)),)
    else:
        assert raw.shape[-3:] == GRID
        assert algo.normalize_obs(raw).shape == (*raw.shape[:-3], int(np.prod(GRID)))
    result = trainer.run()  # policy.act checks it gets (N, 5, 7, 7) on every step
    assert result.step == 3 and "eval/return_mean" in result.final_eval
    results, meta = evaluate_checkpoint(tmp_path / "run")
    assert meta["env_kwargs"] == {"obs_mode": "grid"}
    assert results[0].returns.mean() == result.final_eval["eval/return_mean"]


def test_eval_env_shape_mismatch_fails_early(grid_dir: Path, tmp_path: Path) -> None:
    # A grid dataset whose metadata lost the kwargs (written with the bare id): the loader
    # keeps the data's shape and the trainer refuses the vector-mode eval env before training.
    eps = list(load_dataset(grid_dir).episodes())
    bare = write_minari("keytodoor/grid-bare-v0", eps, env_id=ENV_ID, root=tmp_path / "m")
    cfg = RunConfig(algo="bc", dataset=str(bare), total_steps=1, num_eval_episodes=1,
                    device="cpu", run_dir=str(tmp_path / "run"), algo_config=tiny_config("bc"))
    with pytest.raises(ValueError, match=r"dataset .* has \(5, 7, 7\).*KeyToDoor-v0 gives \(7,\)"):
        Trainer(cfg, progress=False)
    assert not (tmp_path / "run").exists()  # nothing written


def test_evaluate_checkpoint_in_another_env_names_both_shapes(grid_dir: Path,
                                                              tmp_path: Path) -> None:
    cfg = RunConfig(algo="bc", dataset=str(grid_dir), total_steps=1, num_eval_episodes=0,
                    device="cpu", run_dir=str(tmp_path / "run"), algo_config=tiny_config("bc"))
    Trainer(cfg, progress=False).run()
    with pytest.raises(ValueError, match=r"checkpoint .* has \(5, 7, 7\).*Memory-v0 gives \(7,\)"):
        evaluate_checkpoint(tmp_path / "run", env_id=MEMORY_ENV_ID, num_episodes=1)


def _shaped_and_flat(rng: np.random.Generator) -> tuple[EpisodeDataset, EpisodeDataset]:
    """The same random Box-action episodes with (2, 3) observations and flattened to (6,)."""
    episodes = []
    for i, t in enumerate([6, 9, 4, 8]):
        obs = rng.normal(loc=1.0, scale=2.0, size=(t + 1, 2, 3)).astype(np.float32)
        acts = rng.uniform(-1, 1, size=(t, 2)).astype(np.float32)
        episodes.append(Episode(obs, acts, rng.normal(size=t).astype(np.float32),
                                i % 2 == 0, i % 2 == 1))
    flat = [Episode(e.observations.reshape(len(e.observations), 6), e.actions, e.rewards,
                    e.terminated, e.truncated) for e in episodes]
    return EpisodeDataset.from_episodes(episodes), EpisodeDataset.from_episodes(flat)


@pytest.mark.parametrize("name", NAMES)
def test_shaped_observations_learn_exactly_as_flattened(name: str) -> None:
    """Box actions (so continuous CQL too): an algorithm on (2, 3) observations is the same
    MLP on the flattened (6,) vector, update for update and action for action; the vector
    path itself is pinned by the existing sampler and contract tests."""
    shaped, flat = _shaped_and_flat(np.random.default_rng(0))
    runs = []
    for ds in (shaped, flat):
        torch.manual_seed(0)
        algo = ALGORITHMS[name].from_dataset(tiny_config(name), ds)
        sampler = algo.make_sampler(ds, seed=0)
        metrics = [algo.update(sampler.sample()) for _ in range(2)]
        policy = algo.make_policy(3)
        policy.reset(np.ones(3, dtype=bool), 1.0)
        obs = ds.step_observations[[0, 7, 20]]
        runs.append((metrics, policy.act(obs, np.zeros(3, np.float32))))
    (m_shaped, a_shaped), (m_flat, a_flat) = runs
    assert m_shaped == m_flat
    assert a_shaped.shape == (3, 2) and np.array_equal(a_shaped, a_flat)


def test_collect_with_a_grid_checkpoint_records_grid_episodes(grid_dir: Path,
                                                              tmp_path: Path) -> None:
    """`offrl collect env --policy CKPT` on the env the policy was trained for uses the
    checkpoint's recorded env kwargs (else its first act would get (N, 7) observations)."""
    from offrl.cli import main

    cfg = RunConfig(algo="bc", dataset=str(grid_dir), total_steps=1, num_eval_episodes=0,
                    device="cpu", run_dir=str(tmp_path / "run"), algo_config=tiny_config("bc"))
    Trainer(cfg, progress=False).run()
    assert main(["collect", "env", "--env-id", ENV_ID, "--policy", str(tmp_path / "run"),
                 "--episodes", "2", "--dataset-id", "keytodoor/grid-bc-v0",
                 "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    ds = load_dataset(tmp_path / "m" / "keytodoor" / "grid-bc-v0")
    assert ds.observations.shape[1:] == GRID and ds.meta.env_kwargs == {"obs_mode": "grid"}
