"""What every algorithm shares: a plain-data description of the spaces, action scaling,
data-dependent defaults, checkpoint plumbing (`state_dict` / `from_state_dict`) and the
policy wrapper for feed-forward actors.

Subclasses build their networks in `_build()` into `self.nets` (one `nn.Module`, usually a
`ModuleDict`), their optimizers into `self.optimizers` and LR schedulers into
`self.schedulers`; everything in those three is saved and restored here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from offrl.datasets.core import EpisodeDataset
from offrl.datasets.normalizer import Normalizer
from offrl.envs.facts import EnvFacts, find_env_facts
from offrl.nn import merge_zero_decay_groups


@dataclass(frozen=True)
class SpaceSpec:
    """Observation shape and action space as plain data (what a checkpoint stores)."""

    obs_shape: tuple[int, ...]
    discrete: bool
    n: int = 0  # number of actions (Discrete)
    low: tuple[float, ...] = ()  # Box bounds, one entry per action dimension
    high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.discrete and self.n < 1:
            raise ValueError(f"Discrete action space needs n >= 1, got {self.n}")
        if not self.discrete:
            if not self.low or len(self.low) != len(self.high):
                raise ValueError(f"Box action bounds low={self.low} high={self.high} must be "
                                 "non-empty and of equal length")
            lo, hi = np.asarray(self.low), np.asarray(self.high)
            if not (np.isfinite(lo).all() and np.isfinite(hi).all()) or (hi < lo).any():
                raise ValueError(
                    f"Box action bounds must be finite with low <= high (tanh outputs are scaled "
                    f"to them), got low={self.low} high={self.high}")

    @classmethod
    def from_spaces(cls, obs_space: gym.spaces.Space, act_space: gym.spaces.Space) -> SpaceSpec:
        if not isinstance(obs_space, gym.spaces.Box):
            raise ValueError(f"observation space must be a Box, got {obs_space}")
        if isinstance(act_space, gym.spaces.Discrete):
            if int(act_space.start) != 0:
                raise ValueError(f"Discrete action space must start at 0, got {act_space}")
            return cls(tuple(obs_space.shape), True, n=int(act_space.n))
        if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
            return cls(tuple(obs_space.shape), False,
                       low=tuple(float(x) for x in act_space.low),
                       high=tuple(float(x) for x in act_space.high))
        raise ValueError(f"action space must be Discrete or a 1-D Box, got {act_space}")

    def to_dict(self) -> dict[str, Any]:
        action = ({"type": "discrete", "n": self.n} if self.discrete
                  else {"type": "box", "low": list(self.low), "high": list(self.high)})
        return {"obs_shape": list(self.obs_shape), "action": action}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpaceSpec:
        try:
            obs_shape, action = tuple(int(x) for x in d["obs_shape"]), d["action"]
            if action["type"] == "discrete":
                return cls(obs_shape, True, n=int(action["n"]))
            if action["type"] == "box":
                return cls(obs_shape, False, low=tuple(map(float, action["low"])),
                           high=tuple(map(float, action["high"])))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad spaces description {d!r}: {exc}") from exc
        raise ValueError(f"spaces description has unknown action type {action['type']!r}")

    @property
    def obs_dim(self) -> int:
        return math.prod(self.obs_shape)

    @property
    def act_dim(self) -> int:
        """Action vector size (Box) or number of actions (Discrete): the head's output width."""
        return self.n if self.discrete else len(self.low)


class ActionScaler:
    """Maps Box actions to [-1, 1] (what tanh heads output) and back, on one device."""

    def __init__(self, spec: SpaceSpec, device: torch.device) -> None:
        low, high = np.asarray(spec.low, np.float32), np.asarray(spec.high, np.float32)
        half = (high - low) / 2
        self.low, self.high = low, high
        self._center_np, self._half_np = (high + low) / 2, half
        self._center = torch.as_tensor(self._center_np, device=device)
        self._half = torch.as_tensor(half, device=device)
        # A dimension with low == high carries no information: map it to 0, not to inf.
        self._inv_half = torch.as_tensor(np.where(half > 0, 1 / np.maximum(half, 1e-12), 0.0)
                                         .astype(np.float32), device=device)

    def to_unit(self, a: torch.Tensor) -> torch.Tensor:
        """Env-scale actions (..., A) -> [-1, 1], clamped (data may sit a hair outside)."""
        return ((a - self._center) * self._inv_half).clamp(-1.0, 1.0)

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        return u * self._half + self._center

    def to_env(self, u: torch.Tensor) -> np.ndarray:
        """[-1, 1] actions -> (N, A) float32 numpy clipped to the Box (no rounding escapes).
        Scaled on the host: the same float32 multiply and add as `from_unit`, without two
        torch kernels per acting step."""
        unit = u.detach().cpu().numpy()
        return np.clip(unit * self._half_np + self._center_np, self.low, self.high).astype(
            np.float32)


def dataset_env_facts(dataset: EpisodeDataset) -> EnvFacts | None:
    return find_env_facts(dataset.meta.env_id) or find_env_facts(dataset.meta.name)


def env_max_episode_steps(dataset: EpisodeDataset) -> int | None:
    """The env's time limit: the facts table first, else the gymnasium registry."""
    facts = dataset_env_facts(dataset)
    if facts is not None:
        return facts.max_episode_steps
    if dataset.meta.env_id:
        import offrl.envs  # noqa: F401  (registers offrl/* ids)

        try:
            return gym.spec(dataset.meta.env_id).max_episode_steps
        except gym.error.Error:
            return None
    return None


def is_mujoco_like(dataset: EpisodeDataset) -> bool:
    """True when the dataset's env is a gymnasium MuJoCo env (by registry entry point)."""
    if not dataset.meta.env_id:
        return False
    try:
        entry = gym.spec(dataset.meta.env_id).entry_point
    except gym.error.Error:
        return False
    return isinstance(entry, str) and "mujoco" in entry


def config_from_dict(config_cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a frozen config dataclass from `dataclasses.asdict` output (lists -> tuples)."""
    names = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise ValueError(f"{config_cls.__name__}: unknown keys {sorted(unknown)} in saved config")
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class OfflineAlgorithm:
    """Checkpoint and construction plumbing shared by DT, CQL and BC (see module docstring)."""

    name: ClassVar[str]
    batch_kind: ClassVar[Literal["transition", "sequence"]]
    Config: ClassVar[type]

    nets: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]

    def __init__(
        self, config: Any, spaces: SpaceSpec, normalizer: Normalizer,
        resolved: dict[str, Any] | None = None, device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, "
                            f"got {type(config).__name__}")
        if normalizer.mean.shape != spaces.obs_shape:
            raise ValueError(f"normalizer shape {normalizer.mean.shape} != observation shape "
                             f"{spaces.obs_shape}")
        self.config = config
        self.spaces = spaces
        self.normalizer = normalizer
        self.resolved = dict(resolved or {})
        self.device = torch.device(device)
        self.num_updates = 0
        self._loads = 0  # load_state_dict calls: see `weights_stamp`
        self.optimizers, self.schedulers = {}, {}
        self.actions = None if spaces.discrete else ActionScaler(spaces, self.device)
        self._build()

    def _build(self) -> None:
        raise NotImplementedError

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def _impl_for(cls, spaces: SpaceSpec) -> type[OfflineAlgorithm]:
        """The concrete class for these spaces (CQL dispatches discrete vs continuous)."""
        return cls

    @classmethod
    def resolve(cls, config: Any, dataset: EpisodeDataset) -> dict[str, Any]:
        """Data-dependent defaults fixed at construction and saved with the checkpoint."""
        return {}

    @classmethod
    def from_dataset(cls, config: Any, dataset: EpisodeDataset,
                     device: str | torch.device = "cpu") -> OfflineAlgorithm:
        spaces = SpaceSpec.from_spaces(dataset.observation_space, dataset.action_space)
        impl = cls._impl_for(spaces)
        return impl(config, spaces, Normalizer.fit(dataset.step_observations),
                    impl.resolve(config, dataset), device)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any],
                        device: str | torch.device = "cpu") -> OfflineAlgorithm:
        """Rebuild from a checkpoint dict alone (weights, optimizers and all)."""
        if state.get("algorithm") != cls.name:
            raise ValueError(f"checkpoint holds algorithm {state.get('algorithm')!r}, "
                             f"not {cls.name!r}")
        spaces = SpaceSpec.from_dict(state["spaces"])
        impl = cls._impl_for(spaces)
        algo = impl(config_from_dict(impl.Config, state["config"]), spaces,
                    Normalizer.from_state_dict(state["normalizer"]), state["resolved"], device)
        algo.load_state_dict(state)
        return algo

    # ---- checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.name,
            "config": dataclasses.asdict(self.config),
            "spaces": self.spaces.to_dict(),
            "normalizer": self.normalizer.state_dict(),
            "resolved": dict(self.resolved),
            "nets": self.nets.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("algorithm") != self.name:
            raise ValueError(f"checkpoint holds algorithm {state.get('algorithm')!r}, "
                             f"not {self.name!r}")
        saved = config_from_dict(self.Config, state["config"])
        if saved != self.config:
            diff = sorted(f.name for f in dataclasses.fields(saved)
                          if getattr(saved, f.name) != getattr(self.config, f.name))
            raise ValueError(f"checkpoint config differs from this {type(self).__name__}'s in "
                             f"{diff}; rebuild with from_state_dict or the saved config")
        for key, mine in (("spaces", self.spaces.to_dict()), ("resolved", self.resolved)):
            if state[key] != mine:
                raise ValueError(f"checkpoint {key} {state[key]} do not match this "
                                 f"{type(self).__name__}'s {mine}")
        self.normalizer = Normalizer.from_state_dict(state["normalizer"])
        self.nets.load_state_dict(state["nets"])
        for group, live in (("optimizers", self.optimizers), ("schedulers", self.schedulers)):
            if set(state[group]) != set(live):
                raise ValueError(f"checkpoint {group} {sorted(state[group])} do not match "
                                 f"{sorted(live)}")
            for k, obj in live.items():
                saved = state[group][k]
                if group == "optimizers":  # checkpoints from before one-group zero decay
                    saved = merge_zero_decay_groups(saved, len(obj.param_groups))
                obj.load_state_dict(saved)
        self.num_updates = int(state["num_updates"])
        self._loads += 1

    @property
    def weights_stamp(self) -> tuple[int, int]:
        """Changes whenever the parameters may have: (updates, checkpoint loads). For copies
        of the weights kept beside the model (a DT policy's bf16 model, its KV cache's
        transposed matrices): the update count alone misses a load that restores the same
        count, and torch's fused optimizers do not move tensor version counters."""
        return self.num_updates, self._loads

    # ---- helpers for subclasses ----------------------------------------------------------------

    def train_mode(self) -> None:
        """Put `nets` in train mode (a `FeedForwardPolicy` made or used since the last update
        left them in eval mode); checks the flag first: walking every submodule costs time."""
        if not self.nets.training:
            self.nets.train()

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations (..., *obs_shape) -> normalized, flattened (..., obs_dim).

        The one place observations are flattened, for batches in `update` and the
        evaluator's (N, *obs_shape) in `act` alike: networks see a multi-dimensional Box
        (e.g. a (5, 7, 7) grid) as a flat vector (MLPs / linear embeddings; no conv nets)."""
        lead = obs.shape[: obs.ndim - len(self.spaces.obs_shape)]
        return self.normalizer.normalize(obs).reshape(*lead, self.spaces.obs_dim)

    @staticmethod
    def metrics(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
        """Tensors -> floats with a single device sync (on CPU, where there is nothing to
        wait for, plain `.item()` per value: stacking cost ~5x more)."""
        keys = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
        out = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
        if keys and all(values[k].device.type == "cpu" for k in keys):
            out.update((k, float(values[k].item())) for k in keys)
        elif keys:
            flat = torch.stack([values[k].detach().float().reshape(()) for k in keys]).tolist()
            out.update(zip(keys, flat, strict=True))
        return out


def check_policy_inputs(obs: np.ndarray, last_reward: np.ndarray, num_envs: int,
                        obs_shape: tuple[int, ...]) -> None:
    want = (num_envs, *obs_shape)
    if tuple(np.shape(obs)) != want:
        raise ValueError(f"act: obs must have shape {want}, got {tuple(np.shape(obs))}")
    if tuple(np.shape(last_reward)) != (num_envs,):
        raise ValueError(f"act: last_reward must have shape ({num_envs},), "
                         f"got {tuple(np.shape(last_reward))}")


def check_env_mask(env_mask: np.ndarray, num_envs: int) -> np.ndarray:
    mask = np.asarray(env_mask)
    if mask.shape != (num_envs,) or mask.dtype != np.bool_:
        raise ValueError(f"reset: env_mask must be a ({num_envs},) bool array, got "
                         f"shape {mask.shape} dtype {mask.dtype}")
    return mask


class FeedForwardPolicy:
    """A stateless, deterministic policy over a network mapping normalized observations
    (N, obs_dim) to unit actions (N, A) in [-1, 1] or (N, n) scores (argmax for Discrete).

    The algorithm's networks (`algo.nets`, which hold `module`) are switched to eval mode
    once, here, not toggled on every `act` (walking every submodule twice cost about a third
    of a batch-1 act); each algorithm's `update` puts them back in train mode
    (`OfflineAlgorithm.train_mode`), and `act` switches again if an update ran in between."""

    def __init__(self, algo: OfflineAlgorithm, forward: Callable[[torch.Tensor], torch.Tensor],
                 module: nn.Module, num_envs: int) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.algo, self.forward, self.module, self.num_envs = algo, forward, module, num_envs
        algo.nets.eval()

    def reset(self, env_mask: np.ndarray, target_return: float | None = None) -> None:
        check_env_mask(env_mask, self.num_envs)  # nothing to clear: no per-env state

    @torch.no_grad()
    def act(self, obs: np.ndarray, last_reward: np.ndarray) -> np.ndarray:
        check_policy_inputs(obs, last_reward, self.num_envs, self.algo.spaces.obs_shape)
        if self.algo.nets.training:  # an update ran since this policy was made
            self.algo.nets.eval()
        x = torch.as_tensor(np.asarray(obs, np.float32), device=self.algo.device)
        out = self.forward(self.algo.normalize_obs(x))  # (N, A) or (N, n)
        if self.algo.spaces.discrete:
            return out.argmax(dim=-1).cpu().numpy().astype(np.int64)
        return self.algo.actions.to_env(out)

