"""EpisodeDataset against naive reference loops, plus its bad-input errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offrl.datasets import DatasetError, DatasetMeta, EpisodeDataset
from tests.data_helpers import naive_rtg, random_episodes

episode_structures = st.lists(
    st.tuples(st.integers(1, 30), st.booleans()), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(structure=episode_structures, discount=st.sampled_from([1.0, 0.99, 0.5]),
       seed=st.integers(0, 2**16))
def test_layout_and_returns_to_go_match_naive_loops(structure, discount, seed):
    rng = np.random.default_rng(seed)
    lengths, terms = [s[0] for s in structure], [s[1] for s in structure]
    eps = random_episodes(rng, lengths, terms)
    ds = EpisodeDataset.from_episodes(eps, discount=discount)
    assert ds.num_episodes == len(eps) and ds.num_steps == sum(lengths)
    g = 0
    for i, ep in enumerate(eps):
        back = ds.episode(i)
        np.testing.assert_array_equal(back.observations, ep.observations)
        np.testing.assert_array_equal(back.actions, ep.actions)
        assert back.terminated == ep.terminated and back.truncated == ep.truncated
        np.testing.assert_allclose(ds.returns_to_go[g:g + ep.length],
                                   naive_rtg(ep.rewards, discount), rtol=1e-5, atol=1e-5)
        for t in range(ep.length):  # step g's observation row and its successor
            np.testing.assert_array_equal(ds.step_observations[g], ep.observations[t])
            np.testing.assert_array_equal(ds.observations[ds.obs_index[g] + 1],
                                          ep.observations[t + 1])
            assert ds.timesteps[g] == t and ds.episode_of_step[g] == i
            assert ds.terminals[g] == (ep.terminated and t == ep.length - 1)
            g += 1
    np.testing.assert_allclose(ds.episode_returns, [e.episode_return for e in eps], rtol=1e-5)


def test_discrete_actions_and_inferred_spaces():
    rng = np.random.default_rng(0)
    ds = EpisodeDataset.from_episodes(random_episodes(rng, [5, 7], [True, False], act_dim=None))
    assert ds.discrete and ds.actions.dtype == np.int64 and ds.actions.shape == (12,)
    assert ds.action_space.n == int(ds.actions.max()) + 1
    box = EpisodeDataset.from_episodes(random_episodes(rng, [5], [False]))
    assert box.action_space.shape == (2,) and box.action_space.low.min() == -1.0


def test_top_fraction_keeps_best_episodes():
    rng = np.random.default_rng(1)
    eps = random_episodes(rng, [3] * 10, [True] * 10)
    ds = EpisodeDataset.from_episodes(eps)
    top = ds.top_fraction(0.3)
    best = np.sort(np.argsort([-e.episode_return for e in eps])[:3])
    np.testing.assert_allclose(top.episode_returns, ds.episode_returns[best])
    assert ds.top_fraction(0.01).num_episodes == 1
    with pytest.raises(ValueError, match="fraction"):
        ds.top_fraction(0.0)


def test_normalized_score():
    rng = np.random.default_rng(2)
    meta = DatasetMeta(ref_min_score=-10.0, ref_max_score=90.0)
    ds = EpisodeDataset.from_episodes(random_episodes(rng, [3], [True]), meta=meta)
    assert ds.normalized_score(40.0) == pytest.approx(50.0)
    assert EpisodeDataset.from_episodes(random_episodes(rng, [3], [True])).normalized_score(1) \
        is None


def _arrays(rng, n_eps=2, t=4):
    eps = random_episodes(rng, [t] * n_eps, [True] * n_eps)
    return dict(observations=np.concatenate([e.observations for e in eps]),
                actions=np.concatenate([e.actions for e in eps]),
                rewards=np.concatenate([e.rewards for e in eps]),
                episode_starts=np.arange(n_eps + 1) * t,
                terminated=np.ones(n_eps, bool), truncated=np.zeros(n_eps, bool))


@pytest.mark.parametrize("field", ["observations", "actions", "rewards"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_is_rejected_with_field_and_episode(field, bad):
    a = _arrays(np.random.default_rng(3))
    a[field] = a[field].copy()
    a[field].reshape(len(a[field]), -1)[6, 0] = bad  # row 6: episode 1 in every layout
    with pytest.raises(DatasetError, match=f"src.h5: '{field}' contains NaN or inf.*episode 1"):
        EpisodeDataset(**a, meta=DatasetMeta(source="src.h5"))


def test_length_mismatch_is_rejected():
    a = _arrays(np.random.default_rng(4))
    a["rewards"] = a["rewards"][:-1]
    with pytest.raises(DatasetError, match="'rewards' has 7 rows, expected 8"):
        EpisodeDataset(**a)


def test_empty_dataset_is_rejected():
    with pytest.raises(DatasetError, match="empty"):
        EpisodeDataset.from_episodes([])
    a = _arrays(np.random.default_rng(5))
    with pytest.raises(DatasetError, match="empty"):
        EpisodeDataset(a["observations"][:0], a["actions"][:0], a["rewards"][:0], np.array([0]),
                       np.zeros(0, bool), np.zeros(0, bool))


def test_zero_step_episode_is_rejected():
    a = _arrays(np.random.default_rng(6))
    a["episode_starts"] = np.array([0, 0, 8])
    with pytest.raises(DatasetError, match="episode 0 has zero steps"):
        EpisodeDataset(**a)


def test_select_keeps_which_final_observations_are_known():
    rng = np.random.default_rng(7)
    eps = random_episodes(rng, [3, 4, 5], [False, False, True])
    ds = EpisodeDataset.from_episodes(eps, final_obs_known=np.array([False, True, True]))
    np.testing.assert_array_equal(ds.select([2, 0]).final_obs_known, [True, False])
    with pytest.raises(DatasetError, match="'final_obs_known' has 2 entries, expected 3"):
        EpisodeDataset.from_episodes(eps, final_obs_known=np.array([True, True]))
