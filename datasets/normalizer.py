"""Observation normalizer fitted from a dataset and saved with every checkpoint."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class Normalizer:
    """(x - mean) / std per observation feature; `std` floored so constant features stay finite."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, eps: float = 1e-3) -> None:
        mean = np.asarray(mean, dtype=np.float32)
        std = np.asarray(std, dtype=np.float32)
        if mean.shape != std.shape:
            raise ValueError(f"Normalizer mean {mean.shape} and std {std.shape} differ")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError("Normalizer mean/std contain NaN or inf")
        self.mean = mean
        self.std = np.maximum(std, eps).astype(np.float32)
        self._torch: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def fit(cls, observations: np.ndarray, eps: float = 1e-3) -> Normalizer:
        obs = np.asarray(observations, dtype=np.float64)
        return cls(obs.mean(axis=0), obs.std(axis=0), eps)

    @classmethod
    def identity(cls, shape: tuple[int, ...]) -> Normalizer:
        return cls(np.zeros(shape), np.ones(shape))

    def _pair(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Cache per device: normalizing a batch must not copy mean/std every call.
        if device not in self._torch:
            self._torch[device] = (
                torch.as_tensor(self.mean, device=device),
                torch.as_tensor(self.std, device=device),
            )
        return self._torch[device]

    def normalize(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if isinstance(x, torch.Tensor):
            mean, std = self._pair(x.device)
            return (x - mean) / std
        return ((x - self.mean) / self.std).astype(np.float32)

    def denormalize(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if isinstance(x, torch.Tensor):
            mean, std = self._pair(x.device)
            return x * std + mean
        return (x * self.std + self.mean).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "std": self.std.copy()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Normalizer:
        for key in ("mean", "std"):
            if key not in state:
                raise ValueError(f"Normalizer state is missing '{key}'")
        # eps=0: the saved std is already floored; do not floor twice.
        return cls(np.asarray(state["mean"]), np.asarray(state["std"]), eps=0.0)
