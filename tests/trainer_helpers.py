"""Test doubles for the trainer and evaluator tests (test code only, never shipped).

- `LinearBC`: a real, tiny behaviour-cloning algorithm (one linear layer with input dropout)
  that honours the `offrl.algorithm.Algorithm` protocol, plus a NaN injection switch.
- `ScriptedEnv`: episode length, rewards and success are functions of the reset seed, so
  evaluator bookkeeping (quotas, seeds, masks) can be checked exactly.
- `ScriptedRGBEnv` (registered as `offrl_test/ScriptedRGB-v0`): the same, with rgb frames.
- `RecordingPolicy`: logs every reset/act call it receives.
- `write_cartpole_pickle`: a small CartPole dataset with real signal (a scripted controller
  with random action noise), in the trajectory-pickle format `load_dataset` reads.
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from offrl.datasets import EpisodeDataset, Normalizer, TransitionSampler


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """Runs with `num_threads` set torch's global thread count: undo it after each test.
    (Import this fixture into a test module to activate it there.)"""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ---- a tiny real algorithm -----------------------------------------------------------------


@dataclass(frozen=True)
class LinearBCConfig:
    """Linear behaviour cloning (test double)."""

    batch_size: int = 32
    """Transitions per update."""
    lr: float = 0.05
    """Adam learning rate."""
    dropout: float = 0.1
    """Input dropout: draws from the global torch RNG, so exact resume must restore it."""
    nan_at_step: int | None = None
    """Return a NaN loss from this update on (tests the trainer's divergence stop)."""


class LinearPolicy:
    def __init__(self, algo: LinearBC, num_envs: int) -> None:
        self.algo, self.num_envs = algo, num_envs

    def reset(self, env_mask: np.ndarray, target_return: float | None = None) -> None:
        pass

    def act(self, obs: np.ndarray, last_reward: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(self.algo.normalizer.normalize(np.asarray(obs, np.float32)))
        out = self.algo.net(x)  # (N, n_actions) logits or (N, act_dim)
        if self.algo.discrete:
            return out.argmax(-1).numpy()
        return torch.tanh(out).numpy()


class LinearBC:
    name: ClassVar[str] = "linear_bc"
    batch_kind: ClassVar[str] = "transition"
    Config: ClassVar[type] = LinearBCConfig

    def __init__(self, config: LinearBCConfig, obs_dim: int, out_dim: int, discrete: bool,
                 normalizer: Normalizer, device: str | torch.device = "cpu") -> None:
        self.config, self.discrete, self.normalizer = config, discrete, normalizer
        self.obs_dim, self.out_dim = obs_dim, out_dim
        self.device = torch.device(device)
        self.net = nn.Linear(obs_dim, out_dim).to(self.device)
        self.drop = nn.Dropout(config.dropout)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.num_updates = 0

    @classmethod
    def from_dataset(cls, config: LinearBCConfig, dataset: EpisodeDataset,
                     device: str | torch.device = "cpu") -> LinearBC:
        space = dataset.action_space
        discrete = isinstance(space, gym.spaces.Discrete)
        out = int(space.n) if discrete else int(space.shape[0])
        return cls(config, dataset.observations.shape[1], out, discrete,
                   Normalizer.fit(dataset.step_observations), device)

    def make_sampler(self, dataset: EpisodeDataset, seed: int) -> TransitionSampler:
        return TransitionSampler(dataset, self.config.batch_size, seed, self.device)

    def update(self, batch: Any) -> dict[str, float]:
        x = self.drop(self.normalizer.normalize(batch.observations))  # (B, obs_dim)
        out = self.net(x)
        if self.discrete:
            loss = nn.functional.cross_entropy(out, batch.actions)
        else:
            loss = nn.functional.mse_loss(torch.tanh(out), batch.actions)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        bad = self.config.nan_at_step is not None and self.num_updates >= self.config.nan_at_step
        return {"loss": float("nan") if bad else loss.item(),
                "weight_norm": self.net.weight.detach().norm().item()}

    def make_policy(self, num_envs: int) -> LinearPolicy:
        return LinearPolicy(self, num_envs)

    def state_dict(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "obs_dim": self.obs_dim,
                "out_dim": self.out_dim, "discrete": self.discrete,
                "normalizer": self.normalizer.state_dict(), "net": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = int(state["num_updates"])

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | torch.device = "cpu"
                        ) -> LinearBC:
        algo = cls(LinearBCConfig(**state["config"]), state["obs_dim"], state["out_dim"],
                   state["discrete"], Normalizer.from_state_dict(state["normalizer"]), device)
        algo.load_state_dict(state)
        return algo


LINEAR_BC = "tests.trainer_helpers:LinearBC"


def parameters(algo: Any) -> dict[str, torch.Tensor]:
    """Every tensor in an algorithm's state, flattened to dotted names."""
    out: dict[str, torch.Tensor] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)

    walk("", algo.state_dict())
    return out


# ---- data ----------------------------------------------------------------------------------


def cartpole_episodes(num_episodes: int, seed: int, noise: float = 0.3,
                      max_steps: int = 200) -> list[dict[str, np.ndarray]]:
    """Episodes of a pole-angle controller that takes a random action with prob `noise`:
    the data has real signal (BC learns to balance) and varied lengths."""
    env = gym.make("CartPole-v1", max_episode_steps=max_steps)
    rng = np.random.default_rng(seed)
    episodes = []
    for e in range(num_episodes):
        obs, _ = env.reset(seed=seed * 10_000 + e)
        rows, acts, rews = [obs], [], []
        term = trunc = False
        while not (term or trunc):
            a = int(obs[2] + 0.5 * obs[3] > 0)  # push towards the side the pole falls to
            if rng.random() < noise:
                a = int(rng.integers(2))
            obs, r, term, trunc, _ = env.step(a)
            rows.append(obs)
            acts.append(a)
            rews.append(r)
        episodes.append({"observations": np.array(rows, np.float32),
                         "actions": np.array(acts, np.int64),
                         "rewards": np.array(rews, np.float32),
                         "terminals": np.eye(1, len(acts), len(acts) - 1)[0] * term})
    env.close()
    return episodes


def write_cartpole_pickle(path: Path, num_episodes: int = 20, seed: int = 0) -> Path:
    with open(path, "wb") as f:
        pickle.dump(cartpole_episodes(num_episodes, seed), f)
    return path


# ---- evaluator doubles ---------------------------------------------------------------------


def scripted_length(seed: int) -> int:
    """Episode length for a reset seed: 1..12, long and short episodes interleaved."""
    return 1 + (seed * 7) % 12


class ScriptedEnv(gym.Env):
    """obs = [reset seed, t]; reward t+1 on step t; ends after `scripted_length(seed)` steps,
    as a termination for even seeds and a truncation for odd ones; info["success"] on the
    last step of episodes whose seed is a multiple of 3. Actions must be 0 or 1 (checked)."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.seed_, self.t, self.length = -1, 0, 1
        self.resets_without_seed = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            self.resets_without_seed += 1
            seed = 10_000 + self.resets_without_seed  # idle env: any episode will do
        self.seed_, self.t, self.length = seed, 0, scripted_length(seed)
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.array([self.seed_, self.t], np.float32)

    def step(self, action):
        assert int(action) in (0, 1), action
        self.t += 1
        end = self.t >= self.length
        info = {"success": bool(end and self.seed_ % 3 == 0)}
        term, trunc = end and self.seed_ % 2 == 0, end and self.seed_ % 2 == 1
        return self._obs(), float(self.t), term, trunc, info


class ScriptedRGBEnv(ScriptedEnv):
    """ScriptedEnv that renders (8, 8, 3) frames whose brightness is the step count."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__()
        self.render_mode = render_mode

    def render(self) -> np.ndarray:
        return np.full((8, 8, 3), 10 * self.t, dtype=np.uint8)


SCRIPTED_RGB_ID = "offrl_test/ScriptedRGB-v0"
if SCRIPTED_RGB_ID not in gym.registry:
    gym.register(SCRIPTED_RGB_ID, entry_point=ScriptedRGBEnv)


class RecordingPolicy:
    """Returns action 1 everywhere and records (mask, target) of resets and act inputs."""

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self.resets: list[tuple[np.ndarray, float | None]] = []
        self.acts: list[tuple[np.ndarray, np.ndarray]] = []

    def reset(self, env_mask: np.ndarray, target_return: float | None = None) -> None:
        assert env_mask.shape == (self.num_envs,) and env_mask.dtype == bool
        self.resets.append((env_mask.copy(), target_return))

    def act(self, obs: np.ndarray, last_reward: np.ndarray) -> np.ndarray:
        assert obs.shape[0] == self.num_envs and last_reward.shape == (self.num_envs,)
        self.acts.append((obs.copy(), last_reward.copy()))
        return np.ones(self.num_envs, dtype=np.int64)
