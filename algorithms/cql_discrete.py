"""CQL for Discrete actions: Double DQN plus the logsumexp conservative term (see `CQLConfig`)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from offrl.algorithms.base import FeedForwardPolicy
from offrl.algorithms.cql import CQL
from offrl.nn import mlp, optimizer_kwargs, soft_update
from offrl.optim import Adam
from offrl.types import TransitionBatch


class DiscreteCQL(CQL):
    """Q(s, .) from one MLP; loss = TD (Double-DQN target) + alpha * E[logsumexp Q - Q(s, a)]."""

    def _build(self) -> None:
        c, s = self.config, self.spaces
        if not s.discrete:
            raise ValueError("DiscreteCQL needs a Discrete action space; use ContinuousCQL")
        self.q_net = mlp(s.obs_dim, c.critic_hidden, s.n).to(self.device)
        self.q_target = copy.deepcopy(self.q_net).requires_grad_(False)
        self.nets = nn.ModuleDict({"q": self.q_net, "q_target": self.q_target})
        self.optimizers = {"critic": Adam(self.q_net.parameters(), lr=c.critic_lr,
                                                         **optimizer_kwargs(self.device))}

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        self.train_mode()
        obs = self.normalize_obs(batch.observations)  # (B, D)
        next_obs = self.normalize_obs(batch.next_observations)
        with torch.no_grad():
            # Double DQN: the online net picks a', the target net scores it.
            next_a = self.q_net(next_obs).argmax(dim=-1, keepdim=True)  # (B, 1)
            q_next = self.q_target(next_obs).gather(1, next_a).squeeze(1)  # (B,)
            y = batch.rewards + c.gamma * (1.0 - batch.terminals) * q_next
        q_all = self.q_net(obs)  # (B, n)
        q_data = q_all.gather(1, batch.actions[:, None]).squeeze(1)  # (B,)
        td_loss = F.mse_loss(q_data, y)
        gap = (torch.logsumexp(q_all, dim=-1) - q_data).mean()
        loss = td_loss + c.discrete_cql_alpha * gap
        opt = self.optimizers["critic"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        soft_update(self.q_target, self.q_net, c.tau)
        self.num_updates += 1
        return self.metrics({"critic_loss": loss, "td_loss": td_loss,
                             "cql_loss": c.discrete_cql_alpha * gap, "cql_gap": gap,
                             "q_data": q_data.mean()})

    def make_policy(self, num_envs: int) -> FeedForwardPolicy:
        return FeedForwardPolicy(self, self.q_net, self.q_net, num_envs)
