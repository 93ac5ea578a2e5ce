"""D4RL-format HDF5: episode splitting and next-observation alignment against naive loops,
download/cache paths (no network: file:// URLs and a failing opener), and bad files."""

import urllib.error

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offrl.datasets import DatasetError, load_dataset
from offrl.datasets import d4rl as d4rl_mod
from offrl.datasets.core import DatasetMeta
from offrl.datasets.d4rl import D4RL_URLS, d4rl_path, from_flat
from tests.data_helpers import flat_d4rl, naive_split, random_episodes, write_hdf5


@settings(max_examples=50, deadline=None)
@given(structure=st.lists(st.tuples(st.integers(1, 20), st.booleans()), min_size=1, max_size=10),
       with_next=st.booleans(), seed=st.integers(0, 2**16))
def test_split_and_alignment_match_naive_loops(structure, with_next, seed):
    rng = np.random.default_rng(seed)
    eps = random_episodes(rng, [s[0] for s in structure], [s[1] for s in structure])
    flat = flat_d4rl(eps, with_next=with_next)
    ds = from_flat(flat, DatasetMeta(source="mem"))
    ref = naive_split(flat["terminals"], flat["timeouts"])
    assert ds.num_episodes == len(ref)
    for i, (s, e, term) in enumerate(ref):
        assert (ds.episode_starts[i], ds.episode_starts[i + 1]) == (s, e)
        assert ds.terminated[i] == term and ds.truncated[i] == (not term)
        np.testing.assert_array_equal(ds.episode(i).observations[:-1], flat["observations"][s:e])
        if with_next:
            # s' of every step, including a time-out's last step, is that step's own
            # next_observation: never the next episode's first observation.
            np.testing.assert_array_equal(ds.episode(i).observations[1:],
                                          flat["next_observations"][s:e])
    # Without next_observations a time-out's successor is unknown and must not be sampled.
    expect_known = np.ones(len(ref), bool) if with_next else np.array([r[2] for r in ref])
    np.testing.assert_array_equal(ds.final_obs_known, expect_known)


def test_split_on_max_episode_steps_without_timeouts():
    rng = np.random.default_rng(0)
    eps = random_episodes(rng, [5, 5, 3, 5], [False, False, True, False])
    flat = flat_d4rl(eps, with_timeouts=False)
    ds = from_flat(flat, DatasetMeta(source="mem"), max_episode_steps=5)
    np.testing.assert_array_equal(ds.episode_lengths, [5, 5, 3, 5])
    np.testing.assert_array_equal(ds.terminated, [False, False, True, False])


def test_last_episode_without_end_flag_is_truncated():
    rng = np.random.default_rng(1)
    flat = flat_d4rl(random_episodes(rng, [4, 6], [True, False]))
    flat["timeouts"][-1] = False  # data cut mid-episode, as in the 1M-step D4RL files
    ds = from_flat(flat, DatasetMeta(source="mem"))
    assert ds.num_episodes == 2 and ds.truncated[-1] and not ds.terminated[-1]


def test_load_file_reads_env_facts_from_name(tmp_path):
    rng = np.random.default_rng(2)
    eps = random_episodes(rng, [10, 8], [False, True], obs_dim=11, act_dim=3)
    path = write_hdf5(tmp_path / "hopper_medium-v2.hdf5", flat_d4rl(eps))
    ds = load_dataset(path)
    assert ds.meta.env_id == "Hopper-v5"
    assert ds.meta.ref_min_score == pytest.approx(-20.272305)
    assert ds.observation_space.shape == (11,) and ds.action_space.shape == (3,)


def test_float_discrete_actions_become_integers_with_env_id(tmp_path):
    rng = np.random.default_rng(3)
    eps = random_episodes(rng, [6, 4], [True, False], obs_dim=4, act_dim=None, n_actions=2)
    flat = flat_d4rl(eps)
    flat["actions"] = flat["actions"].astype(np.float32)[:, None]  # as the shared files store
    ds = load_dataset(write_hdf5(tmp_path / "data.hdf5", flat), env_id="CartPole-v1")
    assert ds.discrete and ds.actions.dtype == np.int64 and ds.action_space.n == 2


def test_env_id_that_does_not_fit_the_data_is_an_error(tmp_path):
    rng = np.random.default_rng(4)
    path = write_hdf5(tmp_path / "d.hdf5", flat_d4rl(random_episodes(rng, [3], [True])))
    with pytest.raises(DatasetError, match="observations have shape"):
        load_dataset(path, env_id="Hopper-v5")


def test_d4rl_name_downloads_into_cache_atomically(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    src = write_hdf5(tmp_path / "src.hdf5",
                     flat_d4rl(random_episodes(rng, [7], [True], obs_dim=11, act_dim=3)))
    monkeypatch.setitem(D4RL_URLS, "hopper-medium-v2", src.as_uri())
    ds = load_dataset("d4rl:hopper-medium-v2", download=True)
    assert d4rl_path("hopper-medium-v2").exists() and ds.num_steps == 7
    assert not list(d4rl_path("hopper-medium-v2").parent.glob("*.part"))
    # Cached now: loads without downloading even when download is off.
    assert load_dataset("d4rl:hopper-medium-v2").num_steps == 7


def test_published_url_table():
    url = D4RL_URLS["hopper-medium-replay-v2"]
    assert url.endswith("gym_mujoco_v2/hopper_medium_replay-v2.hdf5")
    assert d4rl_path("walker2d-medium-expert-v2").name == "walker2d_medium_expert-v2.hdf5"


def test_unreachable_network_says_how_to_obtain(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(d4rl_mod.urllib.request, "urlopen", refuse)
    with pytest.raises(DatasetError, match="could not download.*copy the file to"):
        load_dataset("d4rl:hopper-medium-v2", download=True)
    assert not list(d4rl_path("hopper-medium-v2").parent.glob("*.part"))


def test_not_cached_and_download_off():
    with pytest.raises(DatasetError, match="not in the cache.*download is off"):
        load_dataset("d4rl:halfcheetah-medium-v2")


def test_unknown_dataset_id():
    with pytest.raises(DatasetError, match="unknown D4RL dataset 'hopper-mediocre-v2'"):
        load_dataset("d4rl:hopper-mediocre-v2")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("no/such/file.hdf5")


def test_missing_key(tmp_path):
    flat = flat_d4rl(random_episodes(np.random.default_rng(6), [3], [True]))
    del flat["terminals"]
    with pytest.raises(DatasetError, match="missing key 'terminals'"):
        load_dataset(write_hdf5(tmp_path / "x.hdf5", flat))


def test_arrays_of_different_lengths(tmp_path):
    flat = flat_d4rl(random_episodes(np.random.default_rng(7), [3, 4], [True, True]))
    flat["rewards"] = flat["rewards"][:-2]
    with pytest.raises(DatasetError, match="x.hdf5: 'rewards' has 5 rows but 'observations' has 7"):
        load_dataset(write_hdf5(tmp_path / "x.hdf5", flat))


def test_nan_in_file_names_the_key(tmp_path):
    flat = flat_d4rl(random_episodes(np.random.default_rng(8), [3, 4], [True, True]))
    flat["actions"][5, 1] = np.nan
    with pytest.raises(DatasetError, match="x.hdf5: 'actions' contains NaN"):
        load_dataset(write_hdf5(tmp_path / "x.hdf5", flat))


def test_empty_file(tmp_path):
    flat = flat_d4rl(random_episodes(np.random.default_rng(9), [3], [True]))
    empty = {k: v[:0] for k, v in flat.items()}
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(write_hdf5(tmp_path / "x.hdf5", empty))


@pytest.mark.parametrize("keep", [0, 100, 0.5])
def test_truncated_or_corrupt_hdf5(tmp_path, keep):
    rng = np.random.default_rng(10)
    eps = random_episodes(rng, [500] * 4, [True] * 4)
    good = write_hdf5(tmp_path / "good.hdf5", flat_d4rl(eps))
    data = good.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(data[:n])
    with pytest.raises(DatasetError, match="bad.hdf5: .*(truncated or corrupt)"):
        load_dataset(bad)
