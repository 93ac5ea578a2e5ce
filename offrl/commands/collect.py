"""`offrl collect keytodoor|env|mujoco`: record episodes into Minari datasets."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from offrl.cli import parse
from offrl.datasets.collect import (
    collect_dataset,
    count_label,
    dataset_root,
    load_checkpoint_policy,
)
from offrl.types import Episode


@dataclass
class KeyToDoorArgs:
    """Record the Decision Transformer paper's Key-to-Door dataset: uniform random-walk
    episodes of offrl/KeyToDoor-v0 (1000 and 10000 episodes are the paper's two sizes), or
    with --memory of offrl/KeyToDoorMemory-v0 (the same episodes, has_key hidden)."""

    episodes: int = 1000
    """Number of episodes."""
    seed: int = 0
    """Seed: the same seed gives the same dataset."""
    out: Path | None = None
    """Minari datasets root (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets)."""
    dataset_id: str | None = None
    """Dataset id (default: keytodoor/random[-grid][-memory]-<count>-v0, e.g.
    keytodoor/random-1k-v0, keytodoor/random-memory-1k-v0)."""
    obs_mode: Literal["vector", "grid"] = "vector"
    """Observation: 7-d vector, or a (5, 7, 7) grid image (id gets a -grid suffix)."""
    memory: bool = False
    """Record the memory variant offrl/KeyToDoorMemory-v0: the has_key feature is always 0,
    so whether the key was picked up is visible only in the history (credit assignment over
    >= 41 steps). Same seed -> the same random walk as without --memory. The dataset names
    that env for evaluation; the id gets a -memory suffix."""
    force: bool = False
    """Overwrite an existing dataset with the same id."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class EnvArgs:
    """Record any gymnasium env with a policy (random or an offrl checkpoint) into a Minari
    dataset, with optional action noise."""

    env_id: str
    """Gymnasium id of the env to record (offrl/* ids included)."""
    episodes: int = 100
    """Number of episodes."""
    policy: str = "random"
    """'random', or an offrl checkpoint file / run folder (its newest checkpoint)."""
    noise: float = 0.0
    """Action noise: Gaussian, std = noise x half-range, for Box (clipped); epsilon for Discrete."""
    seed: int = 0
    """Seed: the same seed (and --num-envs for checkpoint policies) gives the same dataset."""
    dataset_id: str | None = None
    """Dataset id (default: <env>/<policy>[-noise<x>]-<count>-v0, e.g. cartpole/random-1k-v0)."""
    out: Path | None = None
    """Minari datasets root (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets)."""
    num_envs: int = 1
    """Envs stepped in lockstep (batches a checkpoint policy's forward passes)."""
    target_return: float | None = None
    """Target return for return-conditioned policies (default: the checkpoint's first)."""
    device: str = "cpu"
    """Torch device for a checkpoint policy."""
    force: bool = False
    """Overwrite an existing dataset with the same id."""
    progress: bool = True
    """Show a progress bar."""


class _Tally:
    """Counts `info["success"]` on last steps, for envs that report it."""

    def __init__(self) -> None:
        self.seen = self.successes = 0

    def __call__(self, index: int, episode: Episode, info: dict[str, Any]) -> None:
        if "success" in info:
            self.seen += 1
            self.successes += bool(info["success"])


def _summary(path: Path, dataset_id: str, root: Path, episodes: list[Episode],
             tally: _Tally) -> None:
    returns = np.array([e.episode_return for e in episodes])
    steps = sum(e.length for e in episodes)
    terminated = sum(e.terminated for e in episodes)
    print(f"wrote {path}")
    print(f"  load with: load_dataset('{path}'), or 'minari:{dataset_id}' with "
          f"MINARI_DATASETS_PATH={root}")
    print(f"  episodes {len(episodes)}  steps {steps}  terminated {terminated}  "
          f"truncated {len(episodes) - terminated}")
    print(f"  return mean {returns.mean():.4f}  std {returns.std():.4f}  "
          f"min {returns.min():.4f}  max {returns.max():.4f}")
    if tally.seen:
        print(f"  success rate {tally.successes / tally.seen:.4f} "
              f"({tally.successes}/{tally.seen})")


def keytodoor(argv: Sequence[str], prog: str) -> int:
    args = parse(KeyToDoorArgs, argv, prog)
    from offrl.envs.key_to_door import ENV_ID, MEMORY_ENV_ID

    grid = "-grid" if args.obs_mode == "grid" else ""
    memory = "-memory" if args.memory else ""
    env_id = MEMORY_ENV_ID if args.memory else ENV_ID
    dataset_id = args.dataset_id or (
        f"keytodoor/random{grid}{memory}-{count_label(args.episodes)}-v0")
    variant = " (memory variant: has_key hidden)" if args.memory else ""
    tally = _Tally()
    try:
        root = dataset_root(args.out)
        path, episodes = collect_dataset(
            dataset_id, env_id, "random", args.episodes, args.seed, root=root,
            force=args.force, env_kwargs={"obs_mode": "grid"} if grid else None,
            algorithm_name="random",
            description=(f"Key-to-Door (Chen et al. 2021, sec. 5.3){variant} uniform "
                         f"random-walk episodes of {env_id}, seed {args.seed}, recorded by "
                         f"offrl collect"),
            progress=args.progress, on_episode=tally)
    except ValueError as exc:  # DatasetError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _summary(path, dataset_id, root, episodes, tally)
    return 0


def _env_slug(env_id: str) -> str:
    from offrl.envs.facts import find_env_facts

    facts = find_env_facts(env_id)
    if facts is not None:
        return facts.key
    base = env_id.split("/")[-1].split("-v")[0]
    return re.sub(r"[^a-z0-9]+", "", base.lower()) or "env"


def env(argv: Sequence[str], prog: str) -> int:
    args = parse(EnvArgs, argv, prog)
    tally = _Tally()
    try:
        if args.policy == "random":
            policy: Any = "random"
            policy_name, target, kwargs = "random", None, None
        else:
            if not Path(args.policy).exists():
                raise ValueError(f"--policy {args.policy!r}: expected 'random' or an offrl "
                                 f"checkpoint file or run folder, and no such path exists")
            policy, target, payload = load_checkpoint_policy(args.policy, args.num_envs,
                                                             args.device)
            policy_name = str(payload["algo"]).split(":")[-1].lower()
            trained_on = payload.get("env_id")
            # The env the policy was trained for, with its recorded kwargs (e.g. a grid
            # Key-to-Door's obs_mode); another env id gets its defaults.
            kwargs = payload.get("env_kwargs") or None if trained_on == args.env_id else None
            if trained_on and trained_on != args.env_id:
                print(f"note: the checkpoint was trained for {trained_on}, recording "
                      f"{args.env_id}", file=sys.stderr)
        if args.target_return is not None:
            target = args.target_return
        # Minari ids allow letters, digits, '-' and '_' only: 0.1 -> "noise0p1".
        noise = f"-noise{args.noise:g}".replace(".", "p") if args.noise > 0 else ""
        dataset_id = args.dataset_id or (
            f"{_env_slug(args.env_id)}/{policy_name}{noise}-{count_label(args.episodes)}-v0")
        root = dataset_root(args.out)
        path, episodes = collect_dataset(
            dataset_id, args.env_id, policy, args.episodes, args.seed, root=root,
            force=args.force, action_noise=args.noise, num_envs=args.num_envs,
            env_kwargs=kwargs, target_return=target, algorithm_name=policy_name,
            description=(f"{args.env_id} episodes of policy {args.policy} (noise {args.noise:g},"
                         f" seed {args.seed}), recorded by offrl collect"),
            progress=args.progress, on_episode=tally)
    except (ValueError, RuntimeError) as exc:  # DatasetError, ConfigError, CheckpointError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _summary(path, dataset_id, root, episodes, tally)
    return 0


@dataclass
class MujocoArgs:
    """Regenerate a D4RL-style MuJoCo dataset (offrl-mujoco/<env>/<level>-v0) offline from the
    behaviour policies shipped in envs/policies/, deterministically from the seed."""

    env: Literal["hopper", "halfcheetah", "walker2d"] = "hopper"
    """MuJoCo env (Gymnasium v5)."""
    level: Literal["random", "medium", "medium-replay", "expert", "medium-expert"] = "medium"
    """D4RL level; medium-expert holds `episodes` of each policy, medium-replay is the
    learner's shipped buffer (ignores `episodes`)."""
    episodes: int = 1000
    """Episodes per policy."""
    seed: int = 0
    """Seed: the same seed gives the same dataset."""
    envs: int = 10
    """Envs stepped in lockstep (one batched policy call per step)."""
    out: Path | None = None
    """Minari datasets root (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets)."""
    force: bool = False
    """Overwrite an existing dataset with the same id."""
    progress: bool = True
    """Show a progress bar."""


def mujoco(argv: Sequence[str], prog: str) -> int:
    args = parse(MujocoArgs, argv, prog)
    from offrl.datasets import load_dataset
    from offrl.datasets.recipes import make_recipe, recipe_dataset_id

    try:
        root = dataset_root(args.out)
        path = make_recipe(args.env, args.level, args.episodes, args.seed, root=root,
                           force=args.force, num_envs=args.envs, progress=args.progress)
        episodes = list(load_dataset(path).episodes())
    except ValueError as exc:  # DatasetError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _summary(path, recipe_dataset_id(args.env, args.level), root, episodes, _Tally())
    return 0
