"""Data containers shared by the dataset layer, the algorithms and the evaluator.

Shape letters: T episode length, B batch, K context length, N envs.
Every container checks its shapes at construction; none of them holds logic.

Observations keep the dataset's `obs_shape` in every container: a vector (obs_dim,) or a
multi-dimensional Box such as Key-to-Door's (5, H, W) grid. Batches carry them raw; the
algorithms normalize and flatten them to (..., obs_dim) in one place
(`OfflineAlgorithm.normalize_obs`), which the policies use on the (N, *obs_shape)
observations the evaluator passes, so training and acting see the same features. The
networks are MLPs / linear embeddings over that flat vector (no convolutional encoders yet).

Padding convention for sequences (shared by `SequenceSampler` and the DT policy):
windows are LEFT-padded. The newest real step is always at position K-1; when fewer than
K steps exist (the start of an episode) the first K-L positions are padding with
mask 0, zero states/actions/rewards/returns-to-go and timestep 0. This matches what the
evaluator sees at the start of an episode, so training and acting use the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class Episode:
    """One episode in the Minari layout: T+1 observations for T steps."""

    observations: np.ndarray  # (T+1, *obs_shape)
    actions: np.ndarray  # (T, act_dim) float for Box, (T,) integer for Discrete
    rewards: np.ndarray  # (T,)
    terminated: bool  # ended in a terminal state: no bootstrapping from the last obs
    truncated: bool  # cut by a time limit (or the end of the data): bootstrapping is valid

    def __post_init__(self) -> None:
        t = len(self.actions)
        _check(t >= 1, "Episode has zero steps")
        _check(
            len(self.observations) == t + 1,
            f"Episode needs T+1={t + 1} observations for T={t} actions, "
            f"got {len(self.observations)}",
        )
        _check(
            self.rewards.shape == (t,),
            f"Episode rewards must have shape ({t},), got {self.rewards.shape}",
        )
        _check(
            not (self.terminated and self.truncated),
            "Episode cannot be both terminated and truncated",
        )

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum(dtype=np.float64))


@dataclass(frozen=True)
class TransitionBatch:
    """A batch of (s, a, r, s', terminal) for TD learning and BC."""

    observations: torch.Tensor  # (B, *obs_shape) float32, raw (see the module docstring)
    actions: torch.Tensor  # (B, act_dim) float32, or (B,) int64 for discrete actions
    rewards: torch.Tensor  # (B,) float32
    next_observations: torch.Tensor  # (B, *obs_shape) float32
    terminals: torch.Tensor  # (B,) float32; 1 only on true terminations, never on time-outs

    def __post_init__(self) -> None:
        b = self.observations.shape[0]
        _check(self.observations.ndim >= 2, f"observations must be (B, *obs_shape), got "
               f"{tuple(self.observations.shape)}")
        _check(self.next_observations.shape == self.observations.shape,
               f"next_observations {tuple(self.next_observations.shape)} != observations "
               f"{tuple(self.observations.shape)}")
        for name in ("actions", "rewards", "terminals"):
            got = getattr(self, name).shape[0]
            _check(got == b, f"{name} has batch size {got}, observations have {b}")
        _check(self.rewards.ndim == 1 and self.terminals.ndim == 1,
               "rewards and terminals must be (B,)")

    def __len__(self) -> int:
        return self.observations.shape[0]


@dataclass(frozen=True)
class StateActionBatch:
    """(s, a) pairs: what behavior cloning reads of a transition (its sampler gathers only
    these two fields, a twentieth of a BC update less than the full `TransitionBatch`)."""

    observations: torch.Tensor  # (B, *obs_shape) float32, raw; (B, obs_dim) if prepared
    actions: torch.Tensor  # (B, act_dim) float32, or (B,) int64 for discrete actions
    prepared: bool = False
    """True: already in the algorithm's input space (its sampler applied the algorithm's
    observation normalizer and action scaling; see `StateActionSampler`)."""

    def __post_init__(self) -> None:
        _check(self.observations.ndim >= 2, f"observations must be (B, *obs_shape), got "
               f"{tuple(self.observations.shape)}")
        b, got = self.observations.shape[0], self.actions.shape[0]
        _check(got == b, f"actions has batch size {got}, observations have {b}")

    def __len__(self) -> int:
        return self.observations.shape[0]


@dataclass(frozen=True)
class SequenceBatch:
    """A batch of K-step windows for sequence models (left-padded, see module docstring)."""

    states: torch.Tensor  # (B, K, *obs_shape) float32, raw (see the module docstring)
    actions: torch.Tensor  # (B, K, act_dim) float32, or (B, K) int64 for discrete actions
    rewards: torch.Tensor  # (B, K) float32
    returns_to_go: torch.Tensor  # (B, K) float32, already divided by the return scale
    timesteps: torch.Tensor  # (B, K) int64, step index within the episode
    mask: torch.Tensor  # (B, K) bool, True on real steps, False on padding

    def __post_init__(self) -> None:
        _check(self.states.ndim >= 3, f"states must be (B, K, *obs_shape), got "
               f"{tuple(self.states.shape)}")
        bk = tuple(self.states.shape[:2])
        for name in ("actions", "rewards", "returns_to_go", "timesteps", "mask"):
            got = tuple(getattr(self, name).shape[:2])
            _check(got == bk, f"{name} leads with {got}, states with {bk}")
        _check(self.mask.dtype == torch.bool, f"mask must be bool, got {self.mask.dtype}")

    def __len__(self) -> int:
        return self.states.shape[0]
