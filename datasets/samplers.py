"""Batch samplers: vectorized gathers over the columnar dataset, reproducible from a seed.

Both samplers copy the fields they need to `device` once, so sampling on a GPU never crosses
the host boundary, and draw indices with their own `torch.Generator` (no global RNG). Their
generator state is part of a checkpoint (`state_dict`), so a resumed run draws the same batches.

Observations keep their shape, (B, *obs_shape) and (B, K, *obs_shape), vector or image alike:
flattening to obs_dim is the algorithm's (`OfflineAlgorithm.normalize_obs`; see `offrl.types`).
The one exception is a `StateActionSampler` given the algorithm's transforms: its batches are
marked `prepared` (normalized, flattened observations; see the class).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from offrl.datasets.core import EpisodeDataset
from offrl.types import SequenceBatch, StateActionBatch, TransitionBatch


class _Sampler:
    def __init__(self, seed: int, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu() if hasattr(state["generator"], "cpu")
                                 else state["generator"])


class TransitionSampler(_Sampler):
    """Uniform (s, a, r, s', terminal) over steps whose successor observation is known.

    `terminal` is 1 only where the episode terminated; a time-out's last step keeps 0 and its
    s' is that episode's own final observation, never the next episode's first.
    """

    def __init__(
        self, dataset: EpisodeDataset, batch_size: int, seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(seed, device)
        self.batch_size = int(batch_size)
        valid = np.flatnonzero(dataset.next_valid)
        if len(valid) == 0:
            raise ValueError(f"{dataset.meta.name}: no transition has a known next observation")
        d = self.device
        obs_idx = dataset.obs_index[valid]
        # One row gather per field at sample time; s' is simply the next observation row.
        self._obs = torch.as_tensor(dataset.observations, device=d)
        self._obs_idx = torch.as_tensor(obs_idx, device=d)
        self._actions = torch.as_tensor(dataset.actions[valid], device=d)
        self._rewards = torch.as_tensor(dataset.rewards[valid], device=d)
        self._terminals = torch.as_tensor(dataset.terminals[valid], dtype=torch.float32, device=d)
        self.num_transitions = len(valid)
        self.step_index = valid  # (M,) global step of each sampleable transition

    def sample(self) -> TransitionBatch:
        return self.gather(torch.randint(self.num_transitions, (self.batch_size,),
                                         device=self.device, generator=self.generator))

    def gather(self, i: torch.Tensor) -> TransitionBatch:
        """The batch for transition indices `i` (B,), positions among the valid steps."""
        # index_select, not advanced indexing: half the cost for row gathers on CPU.
        o = self._obs_idx.index_select(0, i)
        return TransitionBatch(
            observations=self._obs.index_select(0, o),
            actions=self._actions.index_select(0, i),
            rewards=self._rewards.index_select(0, i),
            next_observations=self._obs.index_select(0, o + 1),
            terminals=self._terminals.index_select(0, i),
        )


class StateActionSampler(TransitionSampler):
    """`TransitionSampler`'s transitions, same draws from the same seed, gathering only (s, a):
    behavior cloning reads nothing else, and the three other row gathers cost about 5% of
    its update.

    With `obs_fn` / `act_fn` (the algorithm's own input transforms, e.g. BC's observation
    normalizer and action scaling to [-1, 1]) the sampler applies them once to the whole
    arrays and its batches are `prepared`: the per-batch transforms were ~5% of a BC update at
    1 thread. Elementwise transforms give the same values either way (tested); when the
    transformed copy would exceed `prepare_limit_bytes` (e.g. grid observations of a large
    dataset) the sampler keeps the raw arrays and its batches are not prepared.
    """

    prepare_limit_bytes = 256 * 2**20

    def __init__(
        self, dataset: EpisodeDataset, batch_size: int, seed: int = 0,
        device: str | torch.device = "cpu",
        obs_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        act_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(dataset, batch_size, seed, device)
        self.prepared = False
        if obs_fn is None and act_fn is None:
            return
        size = 4 * (self._obs.shape[0] * int(np.prod(self._obs.shape[1:]))
                    + self._actions.numel())
        if size > self.prepare_limit_bytes:
            return
        with torch.no_grad():
            if obs_fn is not None:
                self._obs = _chunked(obs_fn, self._obs)
            if act_fn is not None:
                self._actions = _chunked(act_fn, self._actions)
        self.prepared = True

    def sample(self) -> StateActionBatch:  # type: ignore[override]
        return self.gather(torch.randint(self.num_transitions, (self.batch_size,),
                                         device=self.device, generator=self.generator))

    def gather(self, i: torch.Tensor) -> StateActionBatch:  # type: ignore[override]
        o = self._obs_idx.index_select(0, i)
        return StateActionBatch(observations=self._obs.index_select(0, o),
                                actions=self._actions.index_select(0, i),
                                prepared=self.prepared)


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             rows: int = 1 << 16) -> torch.Tensor:
    """fn over `x`'s rows in chunks (bounded temporaries), as one contiguous tensor."""
    return torch.cat([fn(x[lo:lo + rows]) for lo in range(0, x.shape[0], rows)]).contiguous()


class SequenceSampler(_Sampler):
    """K-step windows ending at a uniformly drawn step, left-padded (see `offrl.types`).

    Drawing the window's last step uniformly over all N steps picks each episode with
    probability proportional to its length and every end position within it equally often;
    windows shorter than K occur exactly at episode starts, as they do when acting.
    """

    def __init__(
        self, dataset: EpisodeDataset, batch_size: int, context: int, return_scale: float = 1.0,
        seed: int = 0, device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(seed, device)
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        self.batch_size, self.context = int(batch_size), int(context)
        self.return_scale = float(return_scale)
        d = self.device
        self._obs = torch.as_tensor(dataset.step_observations, device=d)  # (N, *obs_shape)
        self._actions = torch.as_tensor(dataset.actions, device=d)
        self._rewards = torch.as_tensor(dataset.rewards, device=d)
        self._rtg = torch.as_tensor(dataset.returns_to_go / self.return_scale, device=d)
        self._timesteps = torch.as_tensor(dataset.timesteps, device=d)
        self._ep_start = torch.as_tensor(
            dataset.episode_starts[dataset.episode_of_step], device=d)  # (N,)
        self._offsets = torch.arange(-self.context + 1, 1, device=d)  # (K,)
        self.num_steps = dataset.num_steps

    def sample(self) -> SequenceBatch:
        return self.gather(torch.randint(self.num_steps, (self.batch_size,), device=self.device,
                                         generator=self.generator))

    def gather(self, end: torch.Tensor) -> SequenceBatch:
        """The windows whose newest step is global step `end` (B,)."""
        idx = end[:, None] + self._offsets  # (B, K)
        mask = idx >= self._ep_start[end][:, None]  # (B, K) padding where before episode start
        idx = torch.where(mask, idx, end[:, None])  # any valid row; zeroed below
        m = mask.to(self._rewards.dtype)
        actions = self._actions[idx]
        actions = actions * (mask if actions.ndim == 2 else m[..., None]).to(actions.dtype)
        states = self._obs[idx]  # (B, K, *obs_shape)
        return SequenceBatch(
            states=states * m.reshape(*m.shape, *(1,) * (states.ndim - 2)),
            actions=actions,
            rewards=self._rewards[idx] * m,
            returns_to_go=self._rtg[idx] * m,
            timesteps=self._timesteps[idx] * mask,
            mask=mask,
        )
