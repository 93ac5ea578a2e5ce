"""The two interfaces that make algorithms interchangeable: `Algorithm` and `Policy`.

The trainer only ever calls `make_sampler`, `update`, `state_dict`/`load_state_dict`;
the evaluator only `make_policy` and the `Policy` methods. Nothing else crosses.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from offrl.datasets.core import EpisodeDataset


@runtime_checkable
class Sampler(Protocol):
    def sample(self) -> Any: ...  # TransitionBatch or SequenceBatch
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Policy(Protocol):
    """A vectorized, stateful policy serving N envs in lockstep.

    `reset(env_mask, target_return)` starts new episodes in the rows where `env_mask` is
    True (return-conditioned policies take `target_return`, others ignore it). `act(obs,
    last_reward)` gets (N, *obs_shape) raw observations and, per env, the raw reward received
    on the previous step (ignored on a row's first step after reset) and returns (N, act_dim)
    float or (N,) int actions. Observation normalization and return scaling live inside.
    """

    def reset(self, env_mask: np.ndarray, target_return: float | None = None) -> None: ...
    def act(self, obs: np.ndarray, last_reward: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Algorithm(Protocol):
    """An offline RL algorithm: owns its networks, optimizers, LR schedules and normalizer."""

    name: ClassVar[str]
    batch_kind: ClassVar[Literal["transition", "sequence"]]

    def make_sampler(self, dataset: EpisodeDataset, seed: int) -> Sampler: ...
    def update(self, batch: Any) -> dict[str, float]: ...
    def make_policy(self, num_envs: int) -> Policy: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def is_return_conditioned(algo_cls: type) -> bool:
    """Whether the algorithm's policy takes a target return: its `return_conditioned` class
    attribute where it sets one, else whether it models sequences (DT-like)."""
    return bool(getattr(algo_cls, "return_conditioned", algo_cls.batch_kind == "sequence"))
