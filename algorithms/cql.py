"""Conservative Q-Learning (Kumar et al. 2020): SAC + CQL(H) for Box actions; Discrete
action spaces dispatch to the DQN variant in `cql_discrete.py` under the same name."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from offrl.algorithms.base import FeedForwardPolicy, OfflineAlgorithm, SpaceSpec
from offrl.datasets.core import EpisodeDataset
from offrl.datasets.samplers import TransitionSampler
from offrl.nn import CriticEnsemble, mlp, optimizer_kwargs, soft_update
from offrl.optim import Adam
from offrl.types import TransitionBatch

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass(frozen=True)
class CQLConfig:
    """CQL (Kumar et al. 2020, https://arxiv.org/abs/2006.04779).

    Box actions: SAC with twin critics and target critics (Polyak tau), a tanh-Gaussian actor,
    automatic entropy tuning, and the CQL(H) regularizer estimated with importance sampling
    from `num_sampled_actions` uniform actions and as many policy actions at s and at s'
    (all evaluated at s), as in the authors' code (github.com/aviralkumar2907/CQL). TD targets
    bootstrap through time-outs and stop only at true terminations.
    Discrete actions: a Double-DQN backbone (target network, online argmax) with the
    logsumexp CQL term weighted by `discrete_cql_alpha` (Section 4 / Atari setup).

    Deviations from the reference code, and why:
    - the policy samples for the CQL term are drawn once per state from the actor's
      distribution rather than by re-running the actor on N repeated copies of the batch
      (the same distribution, one actor pass instead of N);
    - no behavior-cloning warm-up of the actor (`policy_eval_start`), no max-Q backup and no
      learned log-std multiplier: the paper's MuJoCo results do not need them;
    - Lagrange variant: the learned weight starts at `cql_alpha` and the threshold applies to
      the unweighted gap, as in CORL (the authors' code multiplies a multiplier starting at 1
      by the fixed weight and compares the weighted gap with the threshold);
    - the discrete variant uses a plain DQN head (the paper's Atari runs used QR-DQN) with an
      MSE TD loss and Polyak target updates (tau) instead of periodic hard copies, so both
      variants share one set of target-network knobs.
    """

    batch_size: int = 256
    """Transitions per gradient step."""
    gamma: float = 0.99
    """Discount factor of the TD target."""
    tau: float = 0.005
    """Polyak rate of the target critics (both variants)."""
    actor_hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of the tanh-Gaussian actor MLP (Box actions)."""
    critic_hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of each Q-network MLP (both variants)."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics (the DQN head for Discrete actions)."""
    alpha_lr: float = 1e-4
    """Adam learning rate of the SAC entropy temperature (log alpha)."""
    init_alpha: float = 1.0
    """Initial SAC entropy temperature."""
    target_entropy: float | None = None
    """SAC target entropy; None = -|A| (the action dimension)."""
    backup_entropy: bool = False
    """Subtract alpha * log pi(a'|s') in the TD target (off in the reference MuJoCo setup)."""
    cql_alpha: float = 5.0
    """Weight of the CQL(H) term for Box actions (the paper's MuJoCo value); with `lagrange`
    it is the initial value of the learned weight."""
    num_sampled_actions: int = 10
    """Actions sampled per state from each proposal (uniform, pi(.|s), pi(.|s'))."""
    cql_temperature: float = 1.0
    """Temperature of the logsumexp in the CQL term (Box actions)."""
    lagrange: bool = False
    """Learn the CQL weight by dual gradient descent to hold the gap at `target_action_gap`."""
    target_action_gap: float = 10.0
    """Lagrange threshold tau on E[logsumexp Q - Q(s, a_data)] (used when `lagrange`)."""
    cql_alpha_lr: float = 3e-4
    """Adam learning rate of the Lagrange multiplier (used when `lagrange`)."""
    discrete_cql_alpha: float = 1.0
    """Weight of the logsumexp CQL term for Discrete actions (the paper's Atari runs used 1.0
    and 4.0)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_sampled_actions < 1:
            raise ValueError(f"CQLConfig: batch_size and num_sampled_actions must be >= 1, "
                             f"got {self.batch_size}, {self.num_sampled_actions}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"CQLConfig: need gamma in [0, 1] and tau in (0, 1], "
                             f"got {self.gamma}, {self.tau}")
        if self.init_alpha <= 0 or self.cql_temperature <= 0:
            raise ValueError("CQLConfig: init_alpha and cql_temperature must be > 0")
        if self.lagrange and self.cql_alpha <= 0:
            raise ValueError("CQLConfig: the Lagrange variant needs cql_alpha > 0 to start from")


class TanhGaussianActor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s))) in [-1, 1]^A; the mean acts deterministically."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, 2 * act_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)  # (B, A) each
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


def sample_tanh_gaussian(
    mean: torch.Tensor, log_std: torch.Tensor, num: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterized samples and log-probs: (B, A) -> (B, A), (B,); with `num`,
    (B, num, A), (B, num)."""
    if num is not None:
        mean = mean.unsqueeze(1).expand(-1, num, -1)
        log_std = log_std.unsqueeze(1).expand(-1, num, -1)
    eps = torch.randn_like(mean)
    u = mean + log_std.exp() * eps
    # log N(u) - log|d tanh/du|, with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    logp = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    logp = logp - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), logp


class CQL(OfflineAlgorithm):
    """CQL entry point: `from_dataset` / `from_state_dict` return `ContinuousCQL` for Box
    actions and `DiscreteCQL` for Discrete ones (both are `CQL`s; see `CQLConfig`)."""

    name = "cql"
    batch_kind = "transition"
    Config = CQLConfig

    @classmethod
    def _impl_for(cls, spaces: SpaceSpec) -> type[OfflineAlgorithm]:
        if cls is not CQL:
            return cls
        from offrl.algorithms.cql_discrete import DiscreteCQL

        return DiscreteCQL if spaces.discrete else ContinuousCQL

    def _build(self) -> None:
        raise TypeError("build CQL with CQL.from_dataset / CQL.from_state_dict, or "
                        "ContinuousCQL / DiscreteCQL directly")

    def make_sampler(self, dataset: EpisodeDataset, seed: int) -> TransitionSampler:
        return TransitionSampler(dataset, self.config.batch_size, seed, self.device)


class ContinuousCQL(CQL):
    """SAC + CQL(H) for Box actions; critics and actor work in [-1, 1] action units."""

    def _build(self) -> None:
        c, s = self.config, self.spaces
        if s.discrete:
            raise ValueError("ContinuousCQL needs a Box action space; use DiscreteCQL")
        dev = self.device
        self.actor = TanhGaussianActor(s.obs_dim, s.act_dim, c.actor_hidden).to(dev)
        self.critic = CriticEnsemble(s.obs_dim, s.act_dim, c.critic_hidden, 2).to(dev)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.scalars = nn.ParameterDict({
            "log_alpha": nn.Parameter(torch.tensor(math.log(c.init_alpha), device=dev)),
            "log_cql_alpha": nn.Parameter(torch.tensor(math.log(max(c.cql_alpha, 1e-8)),
                                                       device=dev)),
        })
        self.nets = nn.ModuleDict({"actor": self.actor, "critic": self.critic,
                                   "critic_target": self.critic_target,
                                   "scalars": self.scalars})
        fused = optimizer_kwargs(dev)
        self.optimizers = {
            "actor": Adam(self.actor.parameters(), lr=c.actor_lr, **fused),
            "critic": Adam(self.critic.parameters(), lr=c.critic_lr, **fused),
            "alpha": Adam([self.scalars["log_alpha"]], lr=c.alpha_lr, **fused),
        }
        if c.lagrange:
            self.optimizers["cql_alpha"] = Adam([self.scalars["log_cql_alpha"]],
                                                            lr=c.cql_alpha_lr, **fused)
        self.target_entropy = (-float(s.act_dim) if c.target_entropy is None
                               else float(c.target_entropy))

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        n = c.num_sampled_actions
        self.train_mode()
        obs = self.normalize_obs(batch.observations)  # (B, D)
        next_obs = self.normalize_obs(batch.next_observations)  # (B, D)
        act = self.actions.to_unit(batch.actions)  # (B, A) in [-1, 1]
        b, a_dim = act.shape
        log_alpha = self.scalars["log_alpha"]

        # ---- actor and entropy temperature (critic frozen: no wasted critic gradients) ----
        mean, log_std = self.actor(obs)
        pi, logp_pi = sample_tanh_gaussian(mean, log_std)  # (B, A), (B,)
        alpha_loss = -(log_alpha * (logp_pi.detach() + self.target_entropy)).mean()
        alpha = log_alpha.exp().detach()
        self.critic.requires_grad_(False)
        q_pi = self.critic(obs, pi).min(dim=0).values  # (B,)
        self.critic.requires_grad_(True)
        actor_loss = (alpha * logp_pi - q_pi).mean()

        # ---- TD target and proposal actions for the CQL term ----
        with torch.no_grad():
            next_mean, next_log_std = self.actor(next_obs)
            next_a, next_logp = sample_tanh_gaussian(next_mean, next_log_std, n + 1)
            q_next = self.critic_target(next_obs, next_a[:, n]).min(dim=0).values  # (B,)
            if c.backup_entropy:
                q_next = q_next - alpha * next_logp[:, n]
            y = batch.rewards + c.gamma * (1.0 - batch.terminals) * q_next  # (B,)
            cur_a, cur_logp = sample_tanh_gaussian(mean.detach(), log_std.detach(), n)
            rand_a = torch.rand(b, n, a_dim, device=act.device) * 2 - 1  # (B, n, A)

        # One critic pass over data, uniform, pi(s) and pi(s') actions, all at s.
        acts = torch.cat([act[:, None], rand_a, cur_a, next_a[:, :n]], dim=1)  # (B, 1+3n, A)
        q = self.critic(obs, acts)  # (E, B, 1+3n)
        q_data = q[:, :, 0]  # (E, B)
        td_loss = (q_data - y).pow(2).mean(dim=1).sum()
        # Importance weights: uniform density (1/2)^A on [-1, 1]^A, policy densities exp(logp).
        log_unif = a_dim * math.log(0.5)
        proposals = torch.cat([
            q[:, :, 1:1 + n] - log_unif,
            q[:, :, 1 + n:1 + 2 * n] - cur_logp,
            q[:, :, 1 + 2 * n:] - next_logp[:, :n],
        ], dim=2)  # (E, B, 3n)
        t = c.cql_temperature
        lse = torch.logsumexp(proposals / t, dim=2) * t  # (E, B)
        gap = (lse - q_data).mean(dim=1)  # (E,) per critic
        values: dict[str, torch.Tensor | float] = {}
        if c.lagrange:
            cql_alpha = self.scalars["log_cql_alpha"].exp().clamp(0.0, 1e6)
            cql_loss = (cql_alpha.detach() * (gap - c.target_action_gap)).sum()
            cql_alpha_loss = -(cql_alpha * (gap.detach() - c.target_action_gap)).mean()
            values.update(cql_alpha=cql_alpha, cql_alpha_loss=cql_alpha_loss)
        else:
            cql_loss = c.cql_alpha * gap.sum()
        critic_loss = td_loss + cql_loss

        steps = [("alpha", alpha_loss), ("actor", actor_loss), ("critic", critic_loss)]
        if c.lagrange:
            steps.append(("cql_alpha", cql_alpha_loss))
        for key, loss in steps:
            opt = self.optimizers[key]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        soft_update(self.critic_target, self.critic, c.tau)
        self.num_updates += 1
        values.update(
            critic_loss=critic_loss, td_loss=td_loss, cql_loss=cql_loss, actor_loss=actor_loss,
            alpha=alpha, alpha_loss=alpha_loss, cql_gap=gap.mean(), q_data=q_data.mean(),
            entropy=-logp_pi.mean(),
        )
        return self.metrics(values)

    def make_policy(self, num_envs: int) -> FeedForwardPolicy:
        return FeedForwardPolicy(self, lambda obs: torch.tanh(self.actor(obs)[0]), self.actor,
                                 num_envs)
