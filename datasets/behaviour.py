"""Online SAC for training behaviour policies: the source of D4RL-style MuJoCo datasets.

D4RL's MuJoCo data came from SAC agents: "medium" from a policy stopped at about a third of
expert return, "medium-replay" from that learner's replay buffer up to then, "expert" from a
fully trained one. `train_behaviour` reproduces that pipeline offline on a CPU budget:

- it reuses the CQL module's tanh-Gaussian actor and the fused twin-critic ensemble (SAC is
  CQL without the conservative term; running CQL with weight 0 would still pay for its
  3 x 10 proposal actions per state, so the plain SAC loss lives here);
- every `snapshot_every` env steps it evaluates the deterministic policy and writes a
  snapshot (`snapshots/step_<n>.pt`: actor weights + measured return) and a full
  checkpoint (`checkpoint.pt`: networks, optimizers, RNG states, counters) atomically, and
  the replay buffer (`replay.hdf5`, D4RL layout, readable by `load_dataset`);
- `resume=True` continues from the checkpoint. The env's mid-episode state is not saved, so
  the episode interrupted by a kill is closed as a time-out and a fresh one starts: exact
  continuation is not promised here, only no lost or corrupted data.

No observation normalization (standard for online SAC on MuJoCo); actions in [-1, 1] units.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import torch

from offrl.algorithms.base import ActionScaler, SpaceSpec
from offrl.algorithms.cql import TanhGaussianActor, sample_tanh_gaussian
from offrl.envs.make import make_env
from offrl.nn import CriticEnsemble, soft_update


@dataclass(frozen=True)
class SACConfig:
    """Soft Actor-Critic (Haarnoja et al. 2018, https://arxiv.org/abs/1812.05905) for
    behaviour-policy training. Defaults follow the paper's MuJoCo setup except the network
    width (256x2, as D4RL's rlkit agents) and `total_steps` (a CPU budget)."""

    env_id: str = "Hopper-v5"
    """Gymnasium env to learn in (Box observations and actions)."""
    total_steps: int = 300_000
    """Env steps in all (one gradient update per step after `start_steps`)."""
    start_steps: int = 5_000
    """Initial env steps with uniformly random actions (exploration, no updates)."""
    batch_size: int = 256
    """Transitions per gradient step."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor and of each critic."""
    lr: float = 3e-4
    """Adam learning rate of actor, critics and temperature."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    snapshot_every: int = 10_000
    """Env steps between evaluations, snapshots, checkpoints and replay-buffer saves."""
    eval_episodes: int = 5
    """Deterministic evaluation episodes per snapshot."""
    seed: int = 0
    """Seed of the env, the networks and the sampling."""


class SAC:
    """The learner: actor, twin critics with targets, automatic entropy temperature."""

    def __init__(self, config: SACConfig, spaces: SpaceSpec, device: str = "cpu") -> None:
        self.config, self.spaces, self.device = config, spaces, torch.device(device)
        d, a = spaces.obs_dim, spaces.act_dim
        self.actor = TanhGaussianActor(d, a, config.hidden).to(self.device)
        self.critic = CriticEnsemble(d, a, config.hidden, 2).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=self.device, requires_grad=True)
        self.target_entropy = -float(a)
        self.opt = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=config.lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=config.lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=config.lr),
        }
        self.scaler = ActionScaler(spaces, self.device)

    def update(self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor,
               next_obs: torch.Tensor, term: torch.Tensor) -> dict[str, torch.Tensor]:
        """One SAC step on (B, ...) tensors; `act` in [-1, 1] units."""
        c = self.config
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_a, next_logp = sample_tanh_gaussian(*self.actor(next_obs))
            q_next = self.critic_target(next_obs, next_a).min(dim=0).values - alpha * next_logp
            y = rew + c.gamma * (1.0 - term) * q_next  # (B,) cut at terminations only
        critic_loss = (self.critic(obs, act) - y).pow(2).mean(dim=1).sum()
        pi, logp = sample_tanh_gaussian(*self.actor(obs))
        self.critic.requires_grad_(False)
        actor_loss = (alpha * logp - self.critic(obs, pi).min(dim=0).values).mean()
        self.critic.requires_grad_(True)
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        # The critic steps last: the actor loss backpropagates through the critic's weights.
        for key, loss in (("actor", actor_loss), ("alpha", alpha_loss), ("critic", critic_loss)):
            self.opt[key].zero_grad(set_to_none=True)
            loss.backward()
            self.opt[key].step()
        soft_update(self.critic_target, self.critic, c.tau)
        return {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha": alpha}

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        mean, log_std = self.actor(torch.as_tensor(obs, dtype=torch.float32,
                                                   device=self.device)[None])
        u = torch.tanh(mean) if deterministic else sample_tanh_gaussian(mean, log_std)[0]
        return self.scaler.to_env(u)[0]

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(),
                "opt": {k: o.state_dict() for k, o in self.opt.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for k, o in self.opt.items():
            o.load_state_dict(state["opt"][k])


class ReplayBuffer:
    """Growing arrays of every transition seen, with episode ends (saved in D4RL layout)."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int) -> None:
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.term = np.zeros(capacity, bool)
        self.timeout = np.zeros(capacity, bool)
        self.size = 0

    def add(self, o, a, r, o2, terminated: bool, truncated: bool) -> None:
        i = self.size
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i] = o, a, r, o2
        self.term[i], self.timeout[i] = terminated, truncated and not terminated
        self.size += 1

    def close_episode(self) -> None:
        """Mark the last stored step as a time-out (an episode cut by a restart)."""
        if self.size and not (self.term[self.size - 1] or self.timeout[self.size - 1]):
            self.timeout[self.size - 1] = True

    def sample(self, rng: torch.Generator, batch_size: int,
               device: torch.device) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(self.size, (batch_size,), generator=rng).numpy()
        return tuple(torch.as_tensor(x[idx], device=device) for x in
                     (self.obs, self.act, self.rew, self.next_obs, self.term.astype(np.float32)))

    def save(self, path: Path, upto: int | None = None) -> None:
        n = self.size if upto is None else upto
        tmp = path.with_suffix(".tmp")
        with h5py.File(tmp, "w") as f:
            for key, arr in (("observations", self.obs), ("actions", self.act),
                             ("rewards", self.rew), ("next_observations", self.next_obs),
                             ("terminals", self.term), ("timeouts", self.timeout)):
                f.create_dataset(key, data=arr[:n])
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        with h5py.File(path, "r") as f:
            n = len(f["rewards"])
            self.obs[:n], self.act[:n] = f["observations"][()], f["actions"][()]
            self.rew[:n], self.next_obs[:n] = f["rewards"][()], f["next_observations"][()]
            self.term[:n], self.timeout[:n] = f["terminals"][()], f["timeouts"][()]
        self.size = n


def _config_dict(config: SACConfig) -> dict[str, Any]:
    return asdict(config) | {"hidden": list(config.hidden)}


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def evaluate(agent: SAC, env: gym.Env, episodes: int, seed: int) -> tuple[float, float]:
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(agent.act(obs, deterministic=True))
            total += float(r)
            done = term or trunc
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


def train_behaviour(config: SACConfig, out_dir: str | Path, resume: bool = True,
                    log: Any = print) -> Path:
    """Train SAC in `config.env_id`, writing snapshots, checkpoint and replay buffer to
    `out_dir` (see the module docstring). Returns `out_dir`."""
    out = Path(out_dir)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    env, eval_env = make_env(config.env_id), make_env(config.env_id)
    spaces = SpaceSpec.from_spaces(env.observation_space, env.action_space)
    torch.manual_seed(config.seed)
    agent = SAC(config, spaces)
    buffer = ReplayBuffer(spaces.obs_dim, spaces.act_dim, config.total_steps)
    rng = torch.Generator().manual_seed(config.seed)
    np_rng = np.random.default_rng(config.seed)
    step, episode, history = 0, 0, []
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        # total_steps may grow (train longer); anything else changes the experiment.
        saved = {k: v for k, v in state["config"].items() if k != "total_steps"}
        mine = {k: v for k, v in _config_dict(config).items() if k != "total_steps"}
        if saved != mine:
            raise ValueError(f"{ckpt}: saved config {saved} differs from {mine}")
        agent.load_state_dict(state["agent"])
        rng.set_state(state["rng"])
        np_rng.bit_generator.state = state["np_rng"]
        torch.set_rng_state(state["torch_rng"])
        step, episode, history = state["step"], state["episode"], state["history"]
        buffer.load(out / "replay.hdf5")
        buffer.close_episode()
        log(f"resumed {out} at step {step}")
    obs, _ = env.reset(seed=config.seed * 100_003 + episode)
    ep_return, start, start_step, last_metrics = 0.0, time.perf_counter(), step, {}
    while step < config.total_steps:
        if step < config.start_steps:
            action = np_rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        else:
            action = agent.act(obs, deterministic=False)
        next_obs, r, term, trunc, _ = env.step(action)
        buffer.add(obs, agent.scaler.to_unit(torch.as_tensor(action)).numpy(), r, next_obs,
                   term, trunc)
        ep_return += float(r)
        step += 1
        obs = next_obs
        if term or trunc:
            episode += 1
            obs, _ = env.reset(seed=config.seed * 100_003 + episode)
            ep_return = 0.0
        if step >= config.start_steps:
            last_metrics = agent.update(*buffer.sample(rng, config.batch_size, agent.device))
        if step % config.snapshot_every == 0 or step == config.total_steps:
            mean, std = evaluate(agent, eval_env, config.eval_episodes, seed=10**6 + step)
            sps = (step - start_step) / max(time.perf_counter() - start, 1e-9)
            history.append({"step": step, "return_mean": mean, "return_std": std,
                            "buffer_size": buffer.size})
            _atomic_save({"env_id": config.env_id, "hidden": list(config.hidden),
                          "spaces": spaces.to_dict(), "actor": agent.actor.state_dict(),
                          "step": step, "return_mean": mean, "return_std": std},
                         out / "snapshots" / f"step_{step:08d}.pt")
            buffer.save(out / "replay.hdf5")
            _atomic_save({"config": _config_dict(config),
                          "agent": agent.state_dict(), "rng": rng.get_state(),
                          "np_rng": np_rng.bit_generator.state,
                          "torch_rng": torch.get_rng_state(), "step": step,
                          "episode": episode, "history": history}, ckpt)
            (out / "history.json").write_text(json.dumps(history, indent=1))
            extra = {k: round(float(v.detach()), 3) for k, v in last_metrics.items()}
            log(f"step {step}: eval return {mean:.1f} +- {std:.1f} ({sps:.0f} steps/s) {extra}")
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m offrl.datasets.behaviour --env-id Hopper-v5 --out runs/behaviour/hopper`."""
    import tyro

    @dataclass
    class Args:
        out: str
        """Output directory (snapshots, checkpoint.pt, replay.hdf5, history.json)."""
        sac: SACConfig = SACConfig()
        """SAC settings."""
        resume: bool = True
        """Continue from out/checkpoint.pt when it exists."""
        threads: int = 1
        """torch CPU threads (small networks: one thread is usually fastest)."""

    args = tyro.cli(Args, args=argv)
    torch.set_num_threads(args.threads)
    train_behaviour(args.sac, args.out, args.resume,
                    log=lambda m: print(time.strftime("%H:%M:%S"), m, flush=True))


if __name__ == "__main__":
    main()

