"""Dataset generation: run a policy in a gymnasium env and record the episodes as a Minari
dataset (`offrl collect`).

Reproducibility: episode i is seeded from `SeedSequence(seed, spawn_key=(i,))`, which gives
the env's `reset(seed=...)` and the generator of the random policy and of the action noise.
With the random policy or a plain callable, episode i is therefore the same whatever the
number of envs stepped in lockstep; a vectorized `Policy` (a trained network) sees its
batch composition, so its episodes are reproducible for a fixed `num_envs`.

Policies: `"random"` (uniform over the action space), a plain callable `obs -> action` (one
unbatched observation), or an `offrl.algorithm.Policy` (`reset(mask, target)` /
`act(obs, last_reward)` on (N, ...) batches).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offrl.algorithm import Policy
from offrl.datasets.core import DatasetError
from offrl.datasets.minari_io import write_minari
from offrl.envs.facts import find_env_facts
from offrl.envs.make import make_env
from offrl.types import Episode

PolicyLike = str | Callable[[np.ndarray], Any] | Policy
EnvLike = str | Callable[[], gym.Env]
# Called once per finished episode with (episode index, episode, info of its last step).
EpisodeCallback = Callable[[int, Episode, dict[str, Any]], None]


def episode_seeds(seed: int, index: int) -> tuple[int, np.random.Generator]:
    """(env reset seed, policy/noise generator) of episode `index` of a run seeded `seed`."""
    env_ss, policy_ss = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(2)
    return int(env_ss.generate_state(1)[0]), np.random.default_rng(policy_ss)


def _check_spaces(env: gym.Env) -> None:
    if not isinstance(env.observation_space, gym.spaces.Box):
        raise ValueError(f"collect needs a Box observation space (flatten Dict/Tuple "
                         f"observations first), got {env.observation_space}")
    if not isinstance(env.action_space, gym.spaces.Box | gym.spaces.Discrete):
        raise ValueError(f"collect supports Box and Discrete action spaces, got "
                         f"{env.action_space}")


class _Actions:
    """Turns policy outputs into executed actions: random sampling, noise and clipping."""

    def __init__(self, space: gym.spaces.Space, noise: float) -> None:
        self.space = space
        self.noise = float(noise)
        self.discrete = isinstance(space, gym.spaces.Discrete)
        if not self.discrete:
            self.low = space.low.astype(np.float64)
            self.high = space.high.astype(np.float64)
            if noise > 0 and not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
                raise ValueError(f"action noise needs a bounded action space, got {space}")

    def random(self, rng: np.random.Generator) -> Any:
        if self.discrete:
            return int(self.space.start + rng.integers(self.space.n))
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
            raise ValueError(f"the random policy needs a bounded action space, got {self.space}")
        return rng.uniform(self.low, self.high).astype(self.space.dtype)

    def finish(self, action: Any, rng: np.random.Generator) -> Any:
        """The action to execute: the policy's, perturbed (noise > 0) and clipped to bounds."""
        if self.discrete:
            a = np.asarray(action)
            if a.size != 1 or not np.issubdtype(a.dtype, np.number):
                raise ValueError(f"policy returned {action!r} for {self.space}; expected an int")
            a = int(a.reshape(-1)[0])
            # Epsilon-random exploration: with probability `noise` a uniform action.
            if self.noise > 0 and rng.random() < self.noise:
                a = self.random(rng)
            return a
        a = np.asarray(action, dtype=np.float64)
        if a.size != int(np.prod(self.space.shape)):
            raise ValueError(f"policy returned an action of shape {a.shape}; the action space "
                             f"is {self.space}")
        a = a.reshape(self.space.shape)
        if self.noise > 0:
            # std = noise x half the range: `noise` itself on the usual [-1, 1] controls.
            a = a + rng.normal(size=a.shape) * self.noise * (self.high - self.low) / 2
        # Record what the env executes: out-of-range actions are clipped like a controller.
        return np.clip(a, self.low, self.high).astype(self.space.dtype)


def collect_episodes(
    env: EnvLike,
    policy: PolicyLike,
    num_episodes: int,
    seed: int,
    action_noise: float = 0.0,
    progress: bool = True,
    *,
    num_envs: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    target_return: float | None = None,
    on_episode: EpisodeCallback | None = None,
) -> list[Episode]:
    """Run `num_episodes` episodes of `policy` and return them in episode-index order.

    `env` is a gymnasium id (made with `make_env`, so `offrl/*` ids work) or a zero-argument
    factory. Each episode keeps its T+1 observations, including the final one; an episode
    that ends with both flags set counts as terminated. `action_noise`: Gaussian with std
    noise x half the action range for Box actions (then clipped), epsilon-random with
    epsilon = noise for Discrete ones. `num_envs` envs are stepped in lockstep (useful for a
    batched `Policy`); `target_return` is passed to `Policy.reset`.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if action_noise < 0:
        raise ValueError(f"action_noise must be >= 0, got {action_noise}")
    is_random = isinstance(policy, str)
    if is_random and policy != "random":
        raise ValueError(f"unknown policy {policy!r}: expected 'random', a callable or a Policy")
    if is_random and action_noise > 0:
        raise ValueError("action noise on the random policy changes nothing; drop --noise")
    batched = not is_random and isinstance(policy, Policy)
    if not (is_random or batched or callable(policy)):
        raise ValueError(f"policy must be 'random', a callable or a Policy, got {type(policy)}")

    from tqdm.auto import tqdm

    if isinstance(env, str):
        env_id, kwargs = env, dict(env_kwargs or {})

        def factory() -> gym.Env:
            return make_env(env_id, **kwargs)
    else:
        if env_kwargs:
            raise ValueError("env_kwargs only apply to an env id, not to an env factory")
        factory = env
    n = min(num_envs, num_episodes)
    envs = [factory() for _ in range(n)]
    _check_spaces(envs[0])
    acts = _Actions(envs[0].action_space, action_noise)
    obs_dtype = envs[0].observation_space.dtype

    episodes: list[Episode | None] = [None] * num_episodes
    slot_ep = [-1] * n  # episode index running in each slot, -1 when the slot is done
    slot_rng: list[np.random.Generator | None] = [None] * n
    slot_obs: list[list[np.ndarray]] = [[] for _ in range(n)]
    slot_act: list[list[Any]] = [[] for _ in range(n)]
    slot_rew: list[list[float]] = [[] for _ in range(n)]
    current = [None] * n  # latest observation per slot
    last_reward = np.zeros(n, dtype=np.float64)
    next_ep = 0

    def start(slot: int) -> bool:
        nonlocal next_ep
        if next_ep >= num_episodes:
            slot_ep[slot] = -1
            return False
        env_seed, slot_rng[slot] = episode_seeds(seed, next_ep)
        obs, _ = envs[slot].reset(seed=env_seed)
        slot_ep[slot], next_ep = next_ep, next_ep + 1
        current[slot] = np.asarray(obs, dtype=obs_dtype)
        slot_obs[slot], slot_act[slot], slot_rew[slot] = [current[slot]], [], []
        last_reward[slot] = 0.0
        return True

    bar = tqdm(total=num_episodes, disable=not progress, unit="ep", desc="collect")
    try:
        started = np.array([start(s) for s in range(n)])
        if batched:
            policy.reset(started, target_return)
        while any(e >= 0 for e in slot_ep):
            if batched:
                raw = np.asarray(policy.act(np.stack(current), last_reward.astype(np.float32)))
                if len(raw) != n:
                    raise ValueError(f"Policy.act returned {len(raw)} actions for {n} envs")
            restart = np.zeros(n, dtype=bool)
            for s in range(n):
                if slot_ep[s] < 0:
                    continue
                rng = slot_rng[s]
                if is_random:
                    action = acts.random(rng)
                else:
                    action = acts.finish(raw[s] if batched else policy(current[s]), rng)
                obs, reward, terminated, truncated, info = envs[s].step(action)
                current[s] = np.asarray(obs, dtype=obs_dtype)
                slot_obs[s].append(current[s])
                slot_act[s].append(action)
                slot_rew[s].append(float(reward))
                last_reward[s] = float(reward)
                if terminated or truncated:
                    ep = Episode(
                        observations=np.stack(slot_obs[s]),
                        actions=np.asarray(slot_act[s],
                                           dtype=np.int64 if acts.discrete else acts.space.dtype),
                        rewards=np.asarray(slot_rew[s], dtype=np.float64),
                        terminated=bool(terminated),
                        truncated=bool(truncated) and not terminated,
                    )
                    episodes[slot_ep[s]] = ep
                    if on_episode is not None:
                        on_episode(slot_ep[s], ep, info)
                    bar.update(1)
                    restart[s] = start(s)
            if batched and restart.any():
                policy.reset(restart, target_return)
    finally:
        bar.close()
        for e in envs:
            e.close()
    return [ep for ep in episodes if ep is not None]


def count_label(num_episodes: int) -> str:
    """Episode count as used in dataset ids: 1000 -> "1k", 10000 -> "10k", 250 -> "250"."""
    if num_episodes >= 1000 and num_episodes % 1000 == 0:
        return f"{num_episodes // 1000}k"
    return str(num_episodes)


def check_dataset_id(dataset_id: str) -> None:
    """Raise a clear error unless `dataset_id` is a valid Minari id ("name/dataset-v0")."""
    from minari.dataset.minari_dataset import DATASET_ID_RE

    if not DATASET_ID_RE.fullmatch(dataset_id) or not re.search(r"-v\d+$", dataset_id):
        raise ValueError(f"dataset id {dataset_id!r} is not a Minari id: expected "
                         f"'[namespace/]name-v<version>' (letters, digits, '-', '_'; no dots), "
                         f"e.g. 'keytodoor/random-1k-v0'")


def dataset_root(root: str | Path | None) -> Path:
    """The Minari datasets root: `root`, else $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    if root is not None:
        return Path(root).expanduser().resolve()
    import minari

    return Path(minari.storage.get_dataset_path()).resolve()


def collect_dataset(
    dataset_id: str,
    env_id: str,
    policy: PolicyLike,
    num_episodes: int,
    seed: int,
    *,
    root: str | Path | None = None,
    force: bool = False,
    action_noise: float = 0.0,
    env_kwargs: dict[str, Any] | None = None,
    num_envs: int = 1,
    target_return: float | None = None,
    algorithm_name: str | None = None,
    description: str | None = None,
    progress: bool = True,
    on_episode: EpisodeCallback | None = None,
) -> tuple[Path, list[Episode]]:
    """Collect episodes and write them as Minari dataset `dataset_id` under `root`.

    Reference scores come from ENV_FACTS. Refuses (before collecting) to overwrite an
    existing dataset unless `force`; the write itself is atomic (`write_minari`).
    Returns the dataset directory and the episodes.
    """
    check_dataset_id(dataset_id)
    root = dataset_root(root)
    if (root / dataset_id).exists() and not force:
        raise DatasetError(f"{root / dataset_id} exists; pass force=True (--force) to "
                           f"overwrite it")
    episodes = collect_episodes(
        env_id, policy, num_episodes, seed, action_noise, progress, num_envs=num_envs,
        env_kwargs=env_kwargs, target_return=target_return, on_episode=on_episode)
    facts = find_env_facts(env_id)
    ref_min = facts.ref_min_score if facts else None
    ref_max = facts.ref_max_score if facts else None
    if ref_min is None or ref_max is None:
        # Minari estimates a missing ref_min with unseeded random rollouts: never let it.
        ref_min = ref_max = None
    # With kwargs the env instance carries them in its spec, which Minari stores.
    env_arg: str | gym.Env = make_env(env_id, **env_kwargs) if env_kwargs else env_id
    with warnings.catch_warnings():
        # Minari warns about every optional metadata field (author, code permalink, ...).
        warnings.filterwarnings("ignore", category=UserWarning, module=r"minari\.")
        path = write_minari(
            dataset_id, episodes, env_id=env_arg, root=root, ref_min_score=ref_min,
            ref_max_score=ref_max, algorithm_name=algorithm_name, description=description,
            force=force)
    if not isinstance(env_arg, str):
        env_arg.close()
    return path, episodes


def load_checkpoint_policy(
    path: str | Path, num_envs: int, device: str = "cpu"
) -> tuple[Policy, float | None, dict[str, Any]]:
    """(policy for `num_envs` envs, the checkpoint's first eval target, its payload) from an
    offrl training checkpoint (a file, or a run folder: its newest checkpoint)."""
    try:
        from offrl.checkpoint import load_checkpoint, resolve_checkpoint
        from offrl.config import resolve_algorithm
    except ImportError as exc:  # the trainer modules are optional for the data layer
        raise ValueError(f"checkpoint policies need the offrl trainer modules ({exc})") from exc
    payload = load_checkpoint(resolve_checkpoint(path), map_location=device)
    algorithm = resolve_algorithm(payload["algo"]).from_state_dict(payload["algorithm"], device)
    targets = payload.get("eval_targets") or [None]
    return algorithm.make_policy(num_envs), targets[0], payload
