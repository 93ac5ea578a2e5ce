"""Samplers against naive per-sample reference loops; reproducibility; length-proportional draw."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from offrl.datasets import (
    EpisodeDataset,
    Normalizer,
    SequenceSampler,
    StateActionSampler,
    TransitionSampler,
)
from offrl.datasets.core import DatasetMeta
from offrl.datasets.d4rl import from_flat
from offrl.types import StateActionBatch
from tests.data_helpers import flat_d4rl, random_episodes


def _dataset(seed=0, lengths=(5, 1, 9, 3), terms=(True, False, False, True), act_dim=2):
    rng = np.random.default_rng(seed)
    return EpisodeDataset.from_episodes(random_episodes(rng, list(lengths), list(terms),
                                                        act_dim=act_dim))


def naive_window(ds: EpisodeDataset, end: int, k: int, scale: float):
    """Left-padded K-window ending at global step `end`, built one position at a time."""
    ep = int(ds.episode_of_step[end])
    start = int(ds.episode_starts[ep])
    obs_dim = ds.observations.shape[1]
    states, acts, rews, rtg, ts, mask = [], [], [], [], [], []
    for pos in range(k):
        g = end - (k - 1) + pos
        if g < start:
            states.append(np.zeros(obs_dim))
            acts.append(np.zeros_like(ds.actions[0]))
            rews.append(0.0), rtg.append(0.0), ts.append(0), mask.append(False)
        else:
            states.append(ds.observations[g + ep])
            acts.append(ds.actions[g])
            rews.append(ds.rewards[g])
            rtg.append(sum(ds.rewards[g:int(ds.episode_starts[ep + 1])].tolist()) / scale)
            ts.append(g - start), mask.append(True)
    return states, acts, rews, rtg, ts, mask


@settings(max_examples=40, deadline=None)
@given(structure=st.lists(st.tuples(st.integers(1, 25), st.booleans()), min_size=1, max_size=8),
       k=st.integers(1, 12), discrete=st.booleans(), seed=st.integers(0, 1000))
def test_sequence_windows_match_naive(structure, k, discrete, seed):
    ds = _dataset(seed, [s[0] for s in structure], [s[1] for s in structure],
                  act_dim=None if discrete else 2)
    sampler = SequenceSampler(ds, batch_size=4, context=k, return_scale=10.0, seed=seed)
    ends = torch.arange(ds.num_steps)
    batch = sampler.gather(ends)
    for b, end in enumerate(ends.tolist()):
        s, a, r, g, t, m = naive_window(ds, end, k, 10.0)
        np.testing.assert_allclose(batch.states[b].numpy(), np.array(s), rtol=1e-6)
        np.testing.assert_array_equal(batch.actions[b].numpy(), np.array(a))
        np.testing.assert_allclose(batch.rewards[b].numpy(), r, rtol=1e-6)
        np.testing.assert_allclose(batch.returns_to_go[b].numpy(), g, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(batch.timesteps[b].numpy(), t)
        np.testing.assert_array_equal(batch.mask[b].numpy(), m)
        assert batch.mask[b, -1]  # the newest step is always real (left padding)


@settings(max_examples=30, deadline=None)
@given(structure=st.lists(st.tuples(st.integers(1, 15), st.booleans()), min_size=1, max_size=8),
       with_next=st.booleans(), seed=st.integers(0, 1000))
def test_transitions_match_flat_d4rl(structure, with_next, seed):
    rng = np.random.default_rng(seed)
    eps = random_episodes(rng, [s[0] for s in structure], [s[1] for s in structure])
    flat = flat_d4rl(eps, with_next=with_next)
    ds = from_flat(flat, DatasetMeta(source="mem"))
    expected = sum(len(e.actions) - (0 if with_next or e.terminated else 1) for e in eps)
    if expected == 0:  # only time-outs whose final observation the file lacks
        with pytest.raises(ValueError, match="no transition has a known next observation"):
            TransitionSampler(ds, batch_size=8, seed=seed)
        return
    sampler = TransitionSampler(ds, batch_size=8, seed=seed)
    true_next = np.concatenate([e.observations[1:] for e in eps])
    batch = sampler.gather(torch.arange(sampler.num_transitions))
    for b, g in enumerate(sampler.step_index.tolist()):  # g: row in the flat file
        np.testing.assert_array_equal(batch.observations[b].numpy(), flat["observations"][g])
        np.testing.assert_array_equal(batch.actions[b].numpy(), flat["actions"][g])
        assert batch.rewards[b].item() == pytest.approx(float(flat["rewards"][g]))
        # s' is the step's own successor, never the next episode's first observation;
        # terminal only on true terminations (where s' is unused and may be a placeholder).
        assert batch.terminals[b].item() == float(flat["terminals"][g])
        if with_next or not flat["terminals"][g]:
            np.testing.assert_array_equal(batch.next_observations[b].numpy(), true_next[g])
    # Steps whose successor is unknown (time-out ends without next_observations) are excluded.
    assert sampler.num_transitions == expected


def test_state_action_sampler_draws_the_transition_samplers_pairs():
    # BC's sampler: the same transitions from the same seed, only (s, a) gathered.
    ds = _dataset()
    full, pairs = TransitionSampler(ds, 16, seed=5), StateActionSampler(ds, 16, seed=5)
    for _ in range(3):
        x, y = full.sample(), pairs.sample()
        assert isinstance(y, StateActionBatch) and len(y) == 16
        assert torch.equal(x.observations, y.observations) and torch.equal(x.actions, y.actions)
    with pytest.raises(ValueError, match="actions has batch size 3"):
        StateActionBatch(observations=torch.zeros(4, 2), actions=torch.zeros(3, 1))


def test_prepared_state_action_batches_equal_the_transforms_of_raw_ones(monkeypatch):
    # obs_fn / act_fn applied once to the whole arrays (in chunks) give, batch for batch, the
    # values the same transforms give on raw batches; over the size limit: raw batches.
    ds = _dataset(lengths=(50, 30, 70), terms=(True, False, True))
    norm = Normalizer.fit(ds.step_observations)

    def obs_fn(o):
        return norm.normalize(o)

    def act_fn(a):
        return (a * 0.5 - 0.1).clamp(-1.0, 1.0)

    raw = StateActionSampler(ds, 32, seed=3)
    monkeypatch.setattr("offrl.datasets.samplers._chunked.__defaults__", (7,))  # many chunks
    prep = StateActionSampler(ds, 32, seed=3, obs_fn=obs_fn, act_fn=act_fn)
    assert not raw.prepared and prep.prepared
    for _ in range(3):
        x, y = raw.sample(), prep.sample()
        assert not x.prepared and y.prepared
        assert torch.equal(obs_fn(x.observations), y.observations)
        assert torch.equal(act_fn(x.actions), y.actions)
    monkeypatch.setattr(StateActionSampler, "prepare_limit_bytes", 64)
    small = StateActionSampler(ds, 32, seed=3, obs_fn=obs_fn, act_fn=act_fn)
    assert not small.prepared and torch.equal(small.sample().observations,
                                              StateActionSampler(ds, 32, seed=3).sample()
                                              .observations)


def test_samplers_are_reproducible_and_resumable():
    ds = _dataset()
    for make in (lambda s: TransitionSampler(ds, 16, seed=s),
                 lambda s: SequenceSampler(ds, 16, context=4, seed=s)):
        a, b = make(3), make(3)
        for _ in range(3):
            x, y = a.sample(), b.sample()
            assert torch.equal(x.observations if hasattr(x, "observations") else x.states,
                               y.observations if hasattr(y, "observations") else y.states)
        state = a.state_dict()
        first = a.sample()
        c = make(99)
        c.load_state_dict(state)
        again = c.sample()
        assert torch.equal(first.rewards, again.rewards) and torch.equal(first.actions,
                                                                          again.actions)
        assert not torch.equal(make(4).sample().rewards, make(3).sample().rewards)


def test_episodes_drawn_in_proportion_to_length():
    rng = np.random.default_rng(0)
    eps = random_episodes(rng, [10, 30, 60], [True] * 3)
    for i, ep in enumerate(eps):  # tag each episode's rewards with its index
        ep.rewards[:] = i
    sampler = SequenceSampler(EpisodeDataset.from_episodes(eps), batch_size=20000, context=5,
                              seed=0)
    drawn = sampler.sample().rewards[:, -1].long().numpy()  # episode of each newest step
    np.testing.assert_allclose(np.bincount(drawn, minlength=3) / len(drawn), [0.1, 0.3, 0.6],
                               atol=0.015)


def test_invalid_context():
    with pytest.raises(ValueError, match="context"):
        SequenceSampler(_dataset(), 4, context=0)


def test_normalizer_round_trip_and_state():
    ds = _dataset(lengths=(50, 70), terms=(True, False))
    norm = Normalizer.fit(ds.step_observations)
    x = ds.step_observations
    z = norm.normalize(x)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(norm.denormalize(z), x, atol=1e-5)
    zt = norm.normalize(torch.as_tensor(x))
    np.testing.assert_allclose(zt.numpy(), z, atol=1e-6)
    again = Normalizer.from_state_dict(norm.state_dict())
    np.testing.assert_array_equal(again.normalize(x), z)
    const = Normalizer.fit(np.ones((10, 2)))  # zero std floored, stays finite
    assert np.isfinite(const.normalize(np.ones((1, 2)))).all()
    with pytest.raises(ValueError, match="missing 'std'"):
        Normalizer.from_state_dict({"mean": [0.0]})
