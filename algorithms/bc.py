"""Behavior cloning and %BC (BC on the top fraction of episodes by return)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from offrl.algorithms.base import FeedForwardPolicy, OfflineAlgorithm
from offrl.datasets.core import EpisodeDataset
from offrl.datasets.samplers import StateActionSampler
from offrl.nn import mlp, optimizer_kwargs, weight_decay_groups
from offrl.optim import AdamW
from offrl.types import StateActionBatch, TransitionBatch

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass(frozen=True)
class BCConfig:
    """Behavior cloning: an MLP policy regressed onto the dataset's actions.

    Continuous actions: a deterministic tanh head scaled to the action bounds, trained with
    MSE in the [-1, 1] action range (or, with `loss="gaussian_nll"`, a Gaussian whose mean is
    the tanh output and whose state-dependent log-std is clamped to [-5, 2]; acting uses the
    mean). Discrete actions: logits and cross-entropy, acting by argmax. Observations are
    standardized with the dataset's mean/std.

    Reference: the BC baseline of the Decision Transformer paper (Chen et al. 2021,
    https://arxiv.org/abs/2106.01345) and CORL's `any_percent_bc.py` (256x2 MLP, Adam 3e-4,
    batch 256). Deviation: the Gaussian-NLL option puts the Gaussian on the squashed mean in
    action space (no tanh change of variables), so dataset actions on the bounds stay finite.
    """

    batch_size: int = 256
    """Transitions per gradient step."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the policy MLP."""
    learning_rate: float = 3e-4
    """Adam(W) learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay on linear weight matrices (0 = plain Adam)."""
    loss: Literal["mse", "gaussian_nll"] = "mse"
    """Continuous-action loss: MSE of the tanh action, or the NLL of a Gaussian around it
    (ignored for Discrete actions, which always use cross-entropy)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.learning_rate <= 0 or not self.hidden:
            raise ValueError(f"BCConfig: need batch_size >= 1, learning_rate > 0 and at least "
                             f"one hidden layer, got {self}")


@dataclass(frozen=True)
class PercentBCConfig(BCConfig):
    """%BC: behavior cloning on the top `top_fraction` of episodes by return (Chen et al.
    2021, https://arxiv.org/abs/2106.01345, Section 5.3): separates "imitate the good part of
    the data" from return conditioning. Same network and optimizer as BC.

    Deviations: those of `BCConfig`; in addition the observation normalizer is fitted on the
    kept episodes (the data the policy imitates; the paper does not say which it used)."""

    top_fraction: float = 0.1
    """Fraction of episodes kept, ranked by return (at least one episode)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"PercentBCConfig.top_fraction must be in (0, 1], "
                             f"got {self.top_fraction}")


class BC(OfflineAlgorithm):
    """Behavior cloning; see `BCConfig`."""

    name = "bc"
    batch_kind = "transition"
    Config = BCConfig

    def _build(self) -> None:
        c, s = self.config, self.spaces
        gaussian = not s.discrete and c.loss == "gaussian_nll"
        out = s.act_dim * (2 if gaussian else 1)
        self.policy_net = mlp(s.obs_dim, c.hidden, out).to(self.device)
        self.nets = nn.ModuleDict({"policy": self.policy_net})
        self.optimizers = {"policy": AdamW(
            weight_decay_groups(self.policy_net, c.weight_decay), lr=c.learning_rate,
            **optimizer_kwargs(self.device))}

    def make_sampler(self, dataset: EpisodeDataset, seed: int) -> StateActionSampler:
        # Prepared batches: normalized observations and [-1, 1] actions gathered directly.
        return StateActionSampler(
            dataset, self.config.batch_size, seed, self.device, obs_fn=self.normalize_obs,
            act_fn=None if self.spaces.discrete else self.actions.to_unit)

    def _head(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, obs_dim) normalized -> tanh mean (B, A) and log-std (B, A), or logits (B, n)."""
        out = self.policy_net(obs)
        if self.spaces.discrete:
            return out, None
        if self.config.loss == "gaussian_nll":
            mean, log_std = out.chunk(2, dim=-1)
            return torch.tanh(mean), log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        return torch.tanh(out), None

    def update(self, batch: StateActionBatch | TransitionBatch) -> dict[str, float]:
        self.train_mode()
        prepared = isinstance(batch, StateActionBatch) and batch.prepared
        obs = batch.observations if prepared else self.normalize_obs(batch.observations)
        pred, log_std = self._head(obs)
        if self.spaces.discrete:
            loss = F.cross_entropy(pred, batch.actions)
        else:  # (B, A) in [-1, 1]
            target = batch.actions if prepared else self.actions.to_unit(batch.actions)
            if log_std is None:
                loss = F.mse_loss(pred, target)
            else:  # Gaussian NLL without the constant 0.5 log(2 pi), summed over A
                nll = 0.5 * ((target - pred) * torch.exp(-log_std)) ** 2 + log_std
                loss = nll.sum(-1).mean()
        opt = self.optimizers["policy"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.num_updates += 1
        return self.metrics({"loss": loss})

    def make_policy(self, num_envs: int) -> FeedForwardPolicy:
        return FeedForwardPolicy(self, lambda obs: self._head(obs)[0], self.policy_net, num_envs)


class PercentBC(BC):
    """%BC: BC on `dataset.top_fraction(config.top_fraction)`; see `PercentBCConfig`."""

    name = "pbc"
    Config = PercentBCConfig

    @classmethod
    def from_dataset(cls, config: PercentBCConfig, dataset: EpisodeDataset,
                     device: str | torch.device = "cpu") -> PercentBC:
        if not isinstance(config, PercentBCConfig):
            raise TypeError(f"PercentBC needs a PercentBCConfig, got {type(config).__name__}")
        return super().from_dataset(config, dataset.top_fraction(config.top_fraction), device)

    def make_sampler(self, dataset: EpisodeDataset, seed: int) -> StateActionSampler:
        return super().make_sampler(dataset.top_fraction(self.config.top_fraction), seed)
