import numpy as np
import pytest
import torch

from offrl.types import Episode, SequenceBatch, TransitionBatch


def _ep(t=3, obs_rows=None, **kw):
    obs_rows = t + 1 if obs_rows is None else obs_rows
    args = dict(observations=np.zeros((obs_rows, 2)), actions=np.zeros((t, 1)),
                rewards=np.ones(t), terminated=True, truncated=False)
    args.update(kw)
    return Episode(**args)


def test_episode_properties():
    ep = _ep(4)
    assert ep.length == 4 and ep.episode_return == 4.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(t=0), "zero steps"),
    (dict(obs_rows=3), "T\\+1"),
    (dict(rewards=np.ones(2)), "rewards"),
    (dict(terminated=True, truncated=True), "both"),
])
def test_episode_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _ep(**kwargs)


def test_transition_batch_checks():
    z = torch.zeros
    TransitionBatch(z(4, 3), z(4, 2), z(4), z(4, 3), z(4))
    with pytest.raises(ValueError, match="next_observations"):
        TransitionBatch(z(4, 3), z(4, 2), z(4), z(4, 2), z(4))
    with pytest.raises(ValueError, match="actions has batch size 5"):
        TransitionBatch(z(4, 3), z(5, 2), z(4), z(4, 3), z(4))


def test_sequence_batch_checks():
    z = torch.zeros
    SequenceBatch(z(2, 5, 3), z(2, 5, 1), z(2, 5), z(2, 5), z(2, 5, dtype=torch.long),
                  z(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be bool"):
        SequenceBatch(z(2, 5, 3), z(2, 5, 1), z(2, 5), z(2, 5), z(2, 5), z(2, 5))
    with pytest.raises(ValueError, match="rewards leads with"):
        SequenceBatch(z(2, 5, 3), z(2, 5, 1), z(2, 4), z(2, 5), z(2, 5),
                      z(2, 5, dtype=torch.bool))
