"""`EpisodeDataset`: columnar episode storage shared by every loader and sampler.

Layout (E episodes, N steps in all):
- `observations` (N+E, *obs_shape): each episode stores T+1 rows like Minari, so the
  observation of global step g is row g + episode_of_step[g] and its successor the next row.
- `actions` (N, act_dim) float32 or (N,) int64, `rewards` (N,), `returns_to_go` (N,).
- `episode_starts` (E+1,): step offsets; episode e owns steps [starts[e], starts[e+1]).
- `terminated`, `truncated`, `final_obs_known` (E,): how each episode ended. When a
  source does not store the observation after the last step (D4RL files without
  next_observations, pickles without next_observations), that row repeats the last
  observation and `final_obs_known` is False: samplers never use it as s'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from offrl.types import Episode


class DatasetError(ValueError):
    """Bad or missing dataset input; the message names the source, key and expectation."""


@dataclass
class DatasetMeta:
    """What a dataset knows about where it came from and how to score it."""

    name: str = "dataset"
    source: str = ""  # file, directory or id it was loaded from
    env_id: str | None = None  # gymnasium id of the evaluation env, when known
    ref_min_score: float | None = None  # D4RL-style normalization: random policy return
    ref_max_score: float | None = None  # ... and expert return
    extra: dict[str, Any] = field(default_factory=dict)
    # gym.make kwargs the data was recorded with (a Minari env spec's kwargs, e.g. Key-to-Door's
    # obs_mode="grid"); the evaluation env is made with them (see `offrl.config.env_kwargs`).
    env_kwargs: dict[str, Any] = field(default_factory=dict)


def _episode_ids(starts: np.ndarray) -> np.ndarray:
    lengths = np.diff(starts)
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


def returns_to_go(rewards: np.ndarray, starts: np.ndarray, discount: float = 1.0) -> np.ndarray:
    """Per-step (discounted) sum of the rewards from that step to the episode end."""
    r = rewards.astype(np.float64)
    if discount == 1.0:
        # Suffix sums through one cumulative sum: rtg[g] = C[end] - C[g].
        c = np.concatenate([[0.0], np.cumsum(r)])
        ends = np.repeat(starts[1:], np.diff(starts))
        return (c[ends] - c[:-1]).astype(np.float32)
    # Discounted: sweep time backwards, vectorized over episodes (max_len numpy ops).
    lengths = np.diff(starts)
    out = np.zeros_like(r)
    acc = np.zeros(len(lengths))
    for t in range(int(lengths.max()) - 1, -1, -1):
        alive = lengths > t
        idx = starts[:-1][alive] + t
        acc[alive] = r[idx] + discount * acc[alive]
        out[idx] = acc[alive]
    return out.astype(np.float32)


def _check_finite(name: str, arr: np.ndarray, starts: np.ndarray, source: str, obs: bool) -> None:
    if not np.issubdtype(arr.dtype, np.floating):
        return
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        # Observation rows are offset by the episode index (T+1 layout).
        offsets = starts + (np.arange(len(starts)) if obs else 0)
        ep = int(np.searchsorted(offsets, row, side="right") - 1)
        raise DatasetError(
            f"{source}: '{name}' contains NaN or inf ({int(bad.sum())} rows, first at row {row}, "
            f"episode {ep}); expected finite values"
        )


def _space_str(space: gym.spaces.Space) -> str:
    if isinstance(space, gym.spaces.Discrete):
        return f"Discrete({space.n})"
    return f"{type(space).__name__}{space.shape}"


class EpisodeDataset:
    """Episodes stored as contiguous arrays; see the module docstring for the layout."""

    def __init__(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        episode_starts: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        final_obs_known: np.ndarray | None = None,
        *,
        observation_space: gym.spaces.Space | None = None,
        action_space: gym.spaces.Space | None = None,
        meta: DatasetMeta | None = None,
        discount: float = 1.0,
    ) -> None:
        self.meta = meta or DatasetMeta()
        src = self.meta.source or self.meta.name
        starts = np.asarray(episode_starts, dtype=np.int64)
        n_eps = len(starts) - 1
        if n_eps < 1:
            raise DatasetError(f"{src}: dataset is empty (no episodes)")
        lengths = np.diff(starts)
        if starts[0] != 0 or (lengths < 1).any():
            bad = int(np.flatnonzero(lengths < 1)[0]) if (lengths < 1).any() else 0
            raise DatasetError(f"{src}: episode {bad} has zero steps; every episode needs >= 1")
        n = int(starts[-1])
        for key, arr, want in (
            ("actions", actions, n),
            ("rewards", rewards, n),
            ("observations", observations, n + n_eps),
        ):
            if len(arr) != want:
                raise DatasetError(f"{src}: '{key}' has {len(arr)} rows, expected {want}")
        for key, arr in (("terminated", terminated), ("truncated", truncated)):
            if len(arr) != n_eps:
                raise DatasetError(f"{src}: '{key}' has {len(arr)} entries, expected {n_eps}")
        if np.asarray(rewards).ndim != 1:
            raise DatasetError(f"{src}: 'rewards' must be 1-D, got shape {np.shape(rewards)}")
        _check_finite("observations", observations, starts, src, obs=True)
        _check_finite("actions", actions, starts, src, obs=False)
        _check_finite("rewards", rewards, starts, src, obs=False)

        self.discrete = np.issubdtype(np.asarray(actions).dtype, np.integer)
        self.observations = np.ascontiguousarray(observations, dtype=np.float32)
        if self.discrete:
            self.actions = np.ascontiguousarray(actions, dtype=np.int64).reshape(n)
        else:
            self.actions = np.ascontiguousarray(actions, dtype=np.float32).reshape(n, -1)
        self.rewards = np.ascontiguousarray(rewards, dtype=np.float32)
        self.episode_starts = starts
        self.terminated = np.asarray(terminated, dtype=bool)
        self.truncated = np.asarray(truncated, dtype=bool) & ~self.terminated
        self.final_obs_known = (
            np.ones(n_eps, dtype=bool) if final_obs_known is None
            else np.asarray(final_obs_known, dtype=bool)
        )
        if len(self.final_obs_known) != n_eps:
            raise DatasetError(f"{src}: 'final_obs_known' has {len(self.final_obs_known)} "
                               f"entries, expected {n_eps}")
        self.discount = float(discount)
        self.episode_of_step = _episode_ids(starts)  # (N,)
        self.timesteps = (np.arange(n) - starts[self.episode_of_step]).astype(np.int64)  # (N,)
        self.returns_to_go = returns_to_go(self.rewards, starts, self.discount)  # (N,)
        self.observation_space = observation_space or gym.spaces.Box(
            -np.inf, np.inf, self.observations.shape[1:], np.float32
        )
        self.action_space = action_space or self._infer_action_space()
        if isinstance(self.action_space, gym.spaces.Discrete) != self.discrete:
            raise DatasetError(
                f"{src}: actions are {'integer' if self.discrete else 'float'} but the action "
                f"space is {self.action_space}"
            )

    def _infer_action_space(self) -> gym.spaces.Space:
        if self.discrete:
            return gym.spaces.Discrete(int(self.actions.max()) + 1)
        lo, hi = self.actions.min(axis=0), self.actions.max(axis=0)
        if lo.min() >= -1.0 and hi.max() <= 1.0:  # the usual normalized control range
            return gym.spaces.Box(-1.0, 1.0, (self.actions.shape[1],), np.float32)
        return gym.spaces.Box(lo, hi, dtype=np.float32)

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_episodes(cls, episodes: Sequence[Episode], **kwargs: Any) -> EpisodeDataset:
        if not episodes:
            src = kwargs.get("meta", DatasetMeta()).source or "dataset"
            raise DatasetError(f"{src}: dataset is empty (no episodes)")
        lengths = np.array([e.length for e in episodes], dtype=np.int64)
        return cls(
            np.concatenate([e.observations for e in episodes]),
            np.concatenate([e.actions for e in episodes]),
            np.concatenate([e.rewards for e in episodes]),
            np.concatenate([[0], np.cumsum(lengths)]),
            np.array([e.terminated for e in episodes]),
            np.array([e.truncated for e in episodes]),
            **kwargs,
        )

    def select(self, episode_indices: Sequence[int] | np.ndarray) -> EpisodeDataset:
        """A new dataset holding only the given episodes (in the given order)."""
        idx = np.asarray(episode_indices, dtype=np.int64)
        return EpisodeDataset.from_episodes(
            [self.episode(int(i)) for i in idx],
            final_obs_known=self.final_obs_known[idx],
            observation_space=self.observation_space,
            action_space=self.action_space,
            meta=self.meta,
            discount=self.discount,
        )

    def top_fraction(self, fraction: float) -> EpisodeDataset:
        """%BC filter: keep the top `fraction` of episodes by return (at least one)."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        k = max(1, int(round(fraction * self.num_episodes)))
        # Stable sort so ties keep dataset order: the same filter on the same data every time.
        order = np.argsort(-self.episode_returns, kind="stable")[:k]
        return self.select(np.sort(order))

    def delayed_rewards(self) -> EpisodeDataset:
        """The DT paper's delayed-return variant (sec. 5.3): every reward of an episode is
        moved to its last step, so returns are unchanged but nothing is paid along the way.
        Evaluate policies trained on it in envs wrapped with `offrl.envs.DelayedReward`."""
        rewards = np.zeros_like(self.rewards)
        rewards[self.episode_starts[1:] - 1] = self.episode_returns.astype(np.float32)
        meta = dataclasses.replace(self.meta, name=f"{self.meta.name}-delayed",
                                   extra={**self.meta.extra, "reward": "delayed"})
        return EpisodeDataset(self.observations, self.actions, rewards, self.episode_starts,
                              self.terminated, self.truncated, self.final_obs_known,
                              observation_space=self.observation_space,
                              action_space=self.action_space, meta=meta,
                              discount=self.discount)

    # ---- access ---------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts) - 1

    @property
    def num_steps(self) -> int:
        return int(self.episode_starts[-1])

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.episode_starts)

    @property
    def episode_returns(self) -> np.ndarray:
        c = np.concatenate([[0.0], np.cumsum(self.rewards, dtype=np.float64)])
        return c[self.episode_starts[1:]] - c[self.episode_starts[:-1]]

    @property
    def obs_index(self) -> np.ndarray:
        """(N,) row of `observations` holding each step's observation."""
        return np.arange(self.num_steps) + self.episode_of_step

    @property
    def step_observations(self) -> np.ndarray:
        """(N, *obs_shape) the observation at each step (no final rows)."""
        return self.observations[self.obs_index]

    @property
    def terminals(self) -> np.ndarray:
        """(N,) True on the last step of terminated episodes only (never on time-outs)."""
        out = np.zeros(self.num_steps, dtype=bool)
        out[self.episode_starts[1:][self.terminated] - 1] = True
        return out

    @property
    def next_valid(self) -> np.ndarray:
        """(N,) False where s' is unknown (last step of an episode without its final obs)."""
        out = np.ones(self.num_steps, dtype=bool)
        out[self.episode_starts[1:][~self.final_obs_known] - 1] = False
        return out

    def episode(self, i: int) -> Episode:
        s, e = int(self.episode_starts[i]), int(self.episode_starts[i + 1])
        return Episode(
            observations=self.observations[s + i : e + i + 1],
            actions=self.actions[s:e],
            rewards=self.rewards[s:e],
            terminated=bool(self.terminated[i]),
            truncated=bool(self.truncated[i]),
        )

    def episodes(self) -> Iterator[Episode]:
        for i in range(self.num_episodes):
            yield self.episode(i)

    def normalized_score(self, episode_return: float | np.ndarray) -> float | np.ndarray | None:
        """D4RL normalized score (x100), or None when reference scores are unknown."""
        lo, hi = self.meta.ref_min_score, self.meta.ref_max_score
        if lo is None or hi is None:
            return None
        return 100.0 * (episode_return - lo) / (hi - lo)

    def __len__(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        return (
            f"EpisodeDataset({self.meta.name!r}, episodes={self.num_episodes}, "
            f"steps={self.num_steps}, obs={self.observations.shape[1:]}, "
            f"actions={_space_str(self.action_space)})"
        )
