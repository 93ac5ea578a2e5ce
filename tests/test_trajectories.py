"""Trajectory pickles and expert npz files: synthetic ones and the real published files."""

import json
import pickle

import numpy as np
import pytest

from offrl.datasets import DatasetError, load_dataset
from tests.data_helpers import random_episodes


def _dt_pickle(eps, done_key="terminals", obs="T", with_next=True):
    """The original Decision Transformer repository's layout (T observation rows)."""
    out = []
    for ep in eps:
        d = {"observations": ep.observations[:-1] if obs == "T" else ep.observations,
             "actions": ep.actions, "rewards": ep.rewards}
        if done_key:
            d[done_key] = np.eye(1, ep.length, ep.length - 1, dtype=bool)[0] & ep.terminated
        if with_next:
            d["next_observations"] = ep.observations[1:]
        out.append(d)
    return out


@pytest.mark.parametrize("done_key, obs, with_next", [
    ("terminals", "T", True), ("dones", "T", True), ("terminals", "T+1", False),
    ("terminals", "T", False), (None, "T", True),
])
def test_pickle_layouts(tmp_path, done_key, obs, with_next):
    eps = random_episodes(np.random.default_rng(0), [5, 3, 8], [True, False, False])
    path = tmp_path / "trajs.pkl"
    path.write_bytes(pickle.dumps(_dt_pickle(eps, done_key, obs, with_next)))
    ds = load_dataset(path)
    assert ds.num_episodes == 3 and ds.num_steps == 16
    for i, ep in enumerate(eps):
        back = ds.episode(i)
        np.testing.assert_array_equal(back.observations[:-1], ep.observations[:-1])
        np.testing.assert_array_equal(back.actions, ep.actions)
        assert back.terminated == (ep.terminated and done_key is not None)
        if with_next or obs == "T+1":
            np.testing.assert_array_equal(back.observations[-1], ep.observations[-1])
    known = ds.final_obs_known
    if not with_next and obs == "T":  # final obs unknown for non-terminal episodes
        np.testing.assert_array_equal(known, ds.terminated)
    else:
        assert known.all()


def test_pickle_missing_key(tmp_path):
    eps = random_episodes(np.random.default_rng(1), [4], [True])
    data = _dt_pickle(eps)
    del data[0]["rewards"]
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DatasetError, match="x.pkl: episode 0 is missing key 'rewards'"):
        load_dataset(path)


def test_pickle_truncated(tmp_path):
    eps = random_episodes(np.random.default_rng(2), [40, 40], [True, True])
    blob = pickle.dumps(_dt_pickle(eps))
    path = tmp_path / "x.pkl"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="x.pkl: cannot unpickle"):
        load_dataset(path)


def test_pickle_empty_and_zero_step(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([]))
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(path)
    path.write_bytes(pickle.dumps([{"observations": np.zeros((0, 2)), "actions": np.zeros((0, 1)),
                                    "rewards": np.zeros(0)}]))
    with pytest.raises(DatasetError, match="episode 0 has zero steps"):
        load_dataset(path)


def test_unknown_format(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DatasetError, match="unknown dataset format '.csv'"):
        load_dataset(tmp_path / "x.csv")


def test_sb_npz_time_limit_vs_failure(tmp_path):
    # Two episodes hit the limit (5), one fails early (2): only the short one is terminal.
    n = 12
    starts = np.zeros(n, bool)
    starts[[0, 5, 7]] = True
    np.savez(tmp_path / "e.npz", obs=np.arange(n * 2, dtype=np.float32).reshape(n, 2),
             actions=np.zeros((n, 1), np.int64), rewards=np.ones(n),
             episode_starts=starts, episode_returns=np.array([5.0, 2.0, 5.0]))
    ds = load_dataset(tmp_path / "e.npz")
    np.testing.assert_array_equal(ds.episode_lengths, [5, 2, 5])
    np.testing.assert_array_equal(ds.terminated, [False, True, False])
    np.testing.assert_array_equal(ds.final_obs_known, [False, True, False])


def test_unknown_npz_layout(tmp_path):
    np.savez(tmp_path / "w.npz", foo=np.zeros(3))
    with pytest.raises(DatasetError, match="unknown npz layout"):
        load_dataset(tmp_path / "w.npz")


# ---- the real files in ../shared/data/real (skipped when absent) -------------------------

REAL_CASES = [
    ("original/expert_cartpole.npz", "CartPole-v1", "sb2-expert-cartpole"),
    ("original/cartpole_0_final.npz", "CartPole-v1", "imitation-expert-cartpole_0"),
    ("original/pendulum_0_final.npz", None, "imitation-expert-pendulum_0"),
    ("original/expert_pendulum.npz", None, "sb2-expert-pendulum"),
    ("original/door-v0_demos.pickle", None, "dapg-door-v0-human-demos"),
    ("d4rl_format/sb2-expert-cartpole.hdf5", "CartPole-v1", "sb2-expert-cartpole"),
    ("d4rl_format/imitation-expert-cartpole_0.hdf5", "CartPole-v1",
     "imitation-expert-cartpole_0"),
    ("d4rl_format/imitation-expert-pendulum_0.hdf5", "Pendulum-v1",
     "imitation-expert-pendulum_0"),
    ("d4rl_format/dapg-door-v0-human-demos.hdf5", None, "dapg-door-v0-human-demos"),
]


@pytest.mark.parametrize("rel, env_id, name", REAL_CASES)
def test_real_files_match_their_published_summary(real_data, rel, env_id, name):
    summary = {s["name"]: s for s in json.loads((real_data / "summary.json").read_text())}[name]
    ds = load_dataset(real_data / rel, env_id=env_id)
    assert ds.num_steps == summary["transitions"] and ds.num_episodes == summary["episodes"]
    assert ds.observations.shape[1] == summary["obs_dim"]
    assert ds.episode_returns.mean() == pytest.approx(summary["ret_mean"], abs=0.01)
    assert ds.episode_returns.min() == pytest.approx(summary["ret_min"], abs=0.01)
    assert int(ds.terminated.sum()) == summary["n_terminal"]
    assert int(ds.truncated.sum()) == summary["n_timeout"]
    if env_id == "CartPole-v1":
        assert ds.discrete and ds.action_space.n == 2
