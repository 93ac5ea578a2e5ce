"""Minari: a real dataset written through `minari.create_dataset_from_buffers` and read back."""

import json
import os

import numpy as np
import pytest

from offrl.datasets import DatasetError, load_dataset
from offrl.datasets.minari_io import write_minari
from offrl.envs import make_env
from offrl.types import Episode


def cartpole_episodes(n: int, seed: int) -> list[Episode]:
    env = make_env("CartPole-v1", max_episode_steps=30)  # short cap: some time-outs
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(n):
        obs, _ = env.reset(seed=seed + i)
        o, a, r = [obs], [], []
        while True:
            act = int(rng.integers(2)) if i % 2 else int(o[-1][2] > 0)  # random or balancing
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs), a.append(act), r.append(rew)
            if term or trunc:
                break
        eps.append(Episode(np.array(o), np.array(a), np.array(r, np.float32), term, not term))
    return eps


@pytest.fixture
def minari_root(tmp_path):
    return tmp_path / "minari"


def test_round_trip_through_minari(minari_root):
    eps = cartpole_episodes(6, seed=0)
    path = write_minari("test/cartpole/mixed-v0", eps, env_id="CartPole-v1", root=minari_root,
                        ref_min_score=9.0, ref_max_score=30.0, algorithm_name="scripted")
    assert path == minari_root / "test/cartpole/mixed-v0"
    os.environ["MINARI_DATASETS_PATH"] = str(minari_root)  # the autouse fixture restores it
    for source in ("minari:test/cartpole/mixed-v0", path, path / "data"):
        ds = load_dataset(source)
        assert ds.num_episodes == 6 and ds.discrete and ds.action_space.n == 2
        assert ds.meta.env_id == "CartPole-v1"
        assert (ds.meta.ref_min_score, ds.meta.ref_max_score) == (9.0, 30.0)
        for i, ep in enumerate(eps):
            back = ds.episode(i)
            np.testing.assert_allclose(back.observations, ep.observations)  # T+1 rows
            np.testing.assert_array_equal(back.actions, ep.actions)
            assert (back.terminated, back.truncated) == (ep.terminated, ep.truncated)
    assert ds.truncated.any() and ds.terminated.any()


def test_write_refuses_to_overwrite_and_leaves_nothing_half_written(minari_root):
    eps = cartpole_episodes(2, seed=1)
    write_minari("test/cp-v0", eps, env_id="CartPole-v1", root=minari_root)
    with pytest.raises(DatasetError, match="exists; pass force=True"):
        write_minari("test/cp-v0", eps, env_id="CartPole-v1", root=minari_root)
    write_minari("test/cp-v0", eps[:1], env_id="CartPole-v1", root=minari_root, force=True)
    assert load_dataset(minari_root / "test/cp-v0").num_episodes == 1
    assert [p.name for p in minari_root.iterdir() if p.name.startswith(".tmp")] == []


def test_not_present_locally_says_how_to_obtain():
    with pytest.raises(DatasetError, match="not present locally.*download=True.*offrl collect"):
        load_dataset("minari:mujoco/hopper/medium-v0")


def test_download_failure_is_explained(monkeypatch):
    import minari

    def offline(dataset_id):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(minari, "download_dataset", offline)
    with pytest.raises(DatasetError, match="could not download Minari dataset.*unreachable"):
        load_dataset("minari:mujoco/hopper/medium-v0", download=True)


def test_not_a_minari_directory(tmp_path):
    with pytest.raises(DatasetError, match="not a Minari dataset directory"):
        load_dataset(tmp_path)


def test_corrupt_minari_metadata(minari_root):
    path = write_minari("test/bad-v0", cartpole_episodes(1, 2), env_id="CartPole-v1",
                        root=minari_root)
    (path / "data" / "metadata.json").write_text(json.dumps({"nonsense": 1})[:5])
    with pytest.raises(DatasetError, match="cannot open as a Minari dataset"):
        load_dataset(path)


def test_write_needs_both_reference_scores_or_neither(minari_root):
    with pytest.raises(DatasetError, match="both ref_min_score and ref_max_score"):
        write_minari("test/half-v0", cartpole_episodes(1, 3), env_id="CartPole-v1",
                     root=minari_root, ref_max_score=500.0)
