"""D4RL-style MuJoCo datasets regenerated offline from shipped behaviour policies.

Levels, as in D4RL (Fu et al. 2020, https://arxiv.org/abs/2004.07219):
- random: uniformly random actions;
- medium: a SAC policy stopped at roughly a third of expert return, actions sampled from it;
- medium-replay: the SAC learner's replay buffer up to the medium snapshot;
- expert: the best SAC policy we could train (its return is recorded, not assumed);
- medium-expert: medium and expert episodes together.

Shipped files (`envs/policies/`): `<env>-<level>.pt` is a SAC snapshot (actor weights, the
env id, the return measured when it was taken) written by `promote_snapshot`;
`<env>-medium-replay.hdf5` is the learner's buffer (D4RL layout) up to the medium snapshot.
Generation is deterministic from the seed: env seeds per episode from `collect_episodes`,
action sampling from the policy's own `torch.Generator`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offrl.algorithms.base import ActionScaler, SpaceSpec, check_env_mask, check_policy_inputs
from offrl.algorithms.cql import TanhGaussianActor
from offrl.datasets.core import DatasetError
from offrl.envs.facts import ENV_FACTS

POLICY_DIR = Path(__file__).resolve().parents[1] / "envs" / "policies"
MUJOCO_ENVS = ("hopper", "halfcheetah", "walker2d")
LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")


class BehaviourPolicy:
    """A SAC snapshot as a batched `Policy`: tanh-Gaussian samples (or the mean when
    `deterministic`), drawn from its own seeded generator."""

    def __init__(self, snapshot: dict[str, Any], num_envs: int, seed: int = 0,
                 deterministic: bool = False) -> None:
        self.spaces = SpaceSpec.from_dict(snapshot["spaces"])
        self.actor = TanhGaussianActor(self.spaces.obs_dim, self.spaces.act_dim,
                                       tuple(snapshot["hidden"]))
        self.actor.load_state_dict(snapshot["actor"])
        self.actor.eval()
        self.scaler = ActionScaler(self.spaces, torch.device("cpu"))
        self.num_envs, self.deterministic = num_envs, deterministic
        self.generator = torch.Generator().manual_seed(seed)
        self.env_id: str = snapshot["env_id"]
        self.return_mean: float = float(snapshot["return_mean"])

    def reset(self, env_mask: np.ndarray, target_return: float | None = None) -> None:
        check_env_mask(env_mask, self.num_envs)  # stateless: nothing to clear

    @torch.no_grad()
    def act(self, obs: np.ndarray, last_reward: np.ndarray) -> np.ndarray:
        check_policy_inputs(obs, last_reward, self.num_envs, self.spaces.obs_shape)
        mean, log_std = self.actor(torch.as_tensor(np.asarray(obs, np.float32)))  # (N, A)
        if self.deterministic:
            return self.scaler.to_env(torch.tanh(mean))
        noise = torch.randn(mean.shape, generator=self.generator)
        return self.scaler.to_env(torch.tanh(mean + log_std.exp() * noise))


def policy_path(env: str, level: str) -> Path:
    return POLICY_DIR / f"{env}-{level}.pt"


def load_behaviour_policy(source: str | Path, num_envs: int = 1, seed: int = 0,
                          deterministic: bool = False) -> BehaviourPolicy:
    """A shipped policy by name ("hopper-medium") or a snapshot file path."""
    path = Path(source)
    if not path.exists():
        path = POLICY_DIR / f"{source}.pt"
    if not path.exists():
        shipped = sorted(p.stem for p in POLICY_DIR.glob("*.pt"))
        raise DatasetError(
            f"no behaviour policy '{source}' (shipped: {shipped or 'none yet'}); train one with "
            f"`python -m offrl.datasets.behaviour --out DIR --sac.env-id ENV` and promote a "
            f"snapshot with offrl.datasets.recipes.promote_snapshot")
    try:
        snapshot = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises assorted types on truncated/corrupt files
        raise DatasetError(f"{path}: cannot load behaviour policy ({exc})") from exc
    for key in ("env_id", "spaces", "hidden", "actor", "return_mean"):
        if key not in snapshot:
            raise DatasetError(f"{path}: behaviour policy is missing key '{key}'")
    return BehaviourPolicy(snapshot, num_envs, seed, deterministic)


def snapshot_returns(run_dir: str | Path) -> tuple[list[Path], np.ndarray]:
    """A behaviour run's snapshots in step order and their recorded (deterministic) returns."""
    snaps = sorted(Path(run_dir, "snapshots").glob("step_*.pt"))
    if not snaps:
        raise DatasetError(f"{run_dir}: no snapshots (train with offrl.datasets.behaviour)")
    return snaps, np.array([torch.load(p, weights_only=False)["return_mean"] for p in snaps])


def select_snapshot(run_dir: str | Path, fraction_of_best: float | None) -> Path:
    """The snapshot whose recorded return is closest to `fraction_of_best` x the best
    return in the run; None = the best one. (`offrl.datasets.promote` re-measures the
    candidates with sampled actions, which is what shipping uses.)"""
    snaps, returns = snapshot_returns(run_dir)
    if fraction_of_best is None:
        return snaps[int(returns.argmax())]
    return snaps[int(np.abs(returns - fraction_of_best * returns.max()).argmin())]


def promote_snapshot(snapshot: str | Path, env: str, level: str,
                     replay: str | Path | None = None,
                     extra: dict[str, Any] | None = None) -> Path:
    """Copy a snapshot into `envs/policies/<env>-<level>.pt` (atomically), with `extra`
    entries (e.g. its measured stochastic return) added. For the medium level, `replay` (the
    run's replay.hdf5) is cut at the snapshot's step and shipped as
    `<env>-medium-replay.hdf5`, gzip-compressed. See offrl.datasets.promote for the CLI."""
    import h5py

    POLICY_DIR.mkdir(parents=True, exist_ok=True)
    target = policy_path(env, level)
    tmp = target.with_suffix(".tmp")
    if extra:
        torch.save({**torch.load(snapshot, map_location="cpu", weights_only=False), **extra},
                   tmp)
    else:
        shutil.copyfile(snapshot, tmp)
    os.replace(tmp, target)
    if replay is not None:
        step = int(torch.load(snapshot, weights_only=False)["step"])
        out = POLICY_DIR / f"{env}-medium-replay.hdf5"
        tmp = out.with_suffix(".tmp")
        with h5py.File(replay, "r") as src, h5py.File(tmp, "w") as dst:
            for key in src:
                data = src[key][:step]
                if key == "timeouts" and len(data):  # the cut closes the running episode
                    data[-1] = data[-1] or not src["terminals"][step - 1]
                dst.create_dataset(key, data=data, compression="gzip", compression_opts=6,
                                   shuffle=True)  # byte shuffle: floats compress better
        os.replace(tmp, out)
    return target


def recipe_dataset_id(env: str, level: str) -> str:
    return f"offrl-mujoco/{env}/{level}-v0"


def make_recipe(env: str, level: str, episodes: int, seed: int = 0, *,
                root: str | Path | None = None, force: bool = False, num_envs: int = 10,
                progress: bool = True) -> Path:
    """Generate `offrl-mujoco/<env>/<level>-v0` as a Minari dataset; returns its directory.
    `episodes` is per policy (medium-expert holds 2 x episodes); medium-replay ignores it."""
    from offrl.datasets.collect import collect_episodes, dataset_root
    from offrl.datasets.core import DatasetMeta
    from offrl.datasets.d4rl import from_flat, read_hdf5
    from offrl.datasets.minari_io import write_minari

    if env not in MUJOCO_ENVS:
        raise DatasetError(f"unknown MuJoCo env '{env}'; expected one of {MUJOCO_ENVS}")
    if level not in LEVELS:
        raise DatasetError(f"unknown level '{level}'; expected one of {LEVELS}")
    facts = ENV_FACTS[env]
    dataset_id = recipe_dataset_id(env, level)
    root = dataset_root(root)
    if (root / dataset_id).exists() and not force:
        raise DatasetError(f"{root / dataset_id} exists; pass force=True (--force) to "
                           f"overwrite it")

    def run(policy_level: str | None, offset: int) -> list:
        policy: Any = "random"
        if policy_level is not None:
            policy = load_behaviour_policy(f"{env}-{policy_level}", num_envs, seed + offset)
        return collect_episodes(facts.env_id, policy, episodes, seed + offset,
                                progress=progress, num_envs=num_envs)

    if level == "medium-replay":
        path = POLICY_DIR / f"{env}-medium-replay.hdf5"
        if not path.exists():
            raise DatasetError(f"{path} is not shipped yet: it comes with the medium policy "
                               f"(promote_snapshot(..., replay=run/replay.hdf5))")
        eps = list(from_flat(read_hdf5(path), DatasetMeta(source=str(path))).episodes())
    elif level == "medium-expert":
        eps = run("medium", 0) + run("expert", 1)
    else:
        eps = run(None if level == "random" else level, 0)
    return write_minari(dataset_id, eps, env_id=facts.env_id, root=root,
                        ref_min_score=facts.ref_min_score, ref_max_score=facts.ref_max_score,
                        algorithm_name=f"SAC behaviour policy ({level})" if level != "random"
                        else "random", force=force)
