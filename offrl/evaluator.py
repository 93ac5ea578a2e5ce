"""Vectorized, return-to-go conditioned policy evaluation on N gymnasium envs in lockstep
(offrl's `LockstepVectorEnv` by default; gymnasium's Sync/AsyncVectorEnv as options).

N envs run in lockstep with one batched `policy.act` per step. Episodes are assigned up
front: episode j runs on env j % N and resets that env with seed `seed + j`, so the set of
episodes (and, for a deterministic policy, every return) is the same for any N, and waiting
for each env's whole quota means long episodes are never under-sampled (stopping at the first
E finished episodes would favour short ones).

Autoreset: the vector env is built with `autoreset_mode=DISABLED` (gymnasium >= 1.1;
`LockstepVectorEnv` never autoresets) and the evaluator resets finished envs itself
through `reset(seed=..., options={"reset_mask": ...})`. Gymnasium's NEXT_STEP mode would
spend one `step` call returning a reset observation (and ignore the action), and SAME_STEP
mode resets without a seed; explicit resets give each episode its own seed and keep the
step/reset bookkeeping in one place.
An env whose quota is done keeps being stepped (a vector env steps all its envs) and reset
when it ends, but its rows are masked out of every statistic.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from offrl.algorithm import Policy

EnvSpec = str | Callable[[], gym.Env]


@dataclass(frozen=True)
class EvalResult:
    """Per-episode outcomes of one evaluation at one target return, in episode order."""

    target_return: float | None
    seeds: np.ndarray  # (E,) int64, env reset seed of each episode
    returns: np.ndarray  # (E,) float64, undiscounted episode returns
    lengths: np.ndarray  # (E,) int64
    successes: np.ndarray | None  # (E,) bool when the env reports info["success"]
    ref_scores: tuple[float, float] | None = None  # (random, expert) for normalized scores

    @property
    def normalized_scores(self) -> np.ndarray | None:
        """(E,) D4RL-style 100 * (R - random) / (expert - random), when references are known."""
        if self.ref_scores is None:
            return None
        lo, hi = self.ref_scores
        return 100.0 * (self.returns - lo) / (hi - lo)

    def summary(self) -> dict[str, float]:
        out = {
            "return_mean": float(self.returns.mean()),
            "return_std": float(self.returns.std()),
            "return_min": float(self.returns.min()),
            "return_max": float(self.returns.max()),
            "length_mean": float(self.lengths.mean()),
        }
        if self.successes is not None:
            out["success_rate"] = float(self.successes.mean())
        norm = self.normalized_scores
        if norm is not None:
            out["normalized_score"] = float(norm.mean())
            out["normalized_score_std"] = float(norm.std())
        return out


def target_tag(target: float | None) -> str:
    """'3600', '0.5' or 'none': the <target> part of eval/<target>/... metric names."""
    return "none" if target is None else f"{target:g}"


def _make_env_fn(env: EnvSpec, **kwargs: Any) -> Callable[[], gym.Env]:
    if callable(env):
        if kwargs:
            raise ValueError(f"env_kwargs {sorted(kwargs)} apply to an env id, not to a factory")
        return env
    from offrl.envs.make import make_env

    env_id = env

    def build() -> gym.Env:
        return make_env(env_id, **kwargs)

    return build


VECTOR_KINDS = ("lockstep", "sync", "async")


class Evaluator:
    """Holds N envs for repeated evaluations (building MuJoCo envs is not free).

    `vector`: how the N envs are stepped. "lockstep" (default): `LockstepVectorEnv`, one
    Python loop into preallocated arrays, the same episodes as "sync" bit for bit and
    cheaper per step; "sync": gymnasium's `SyncVectorEnv`; "async": gymnasium's
    `AsyncVectorEnv` (one process per env: pays only when an env step costs far more than
    the pipe round trip, which MuJoCo's ~0.1 ms does not). `async_envs=True` means "async".
    `env_threads`: lockstep only, step the envs in that many threads (see
    `LockstepVectorEnv`; same episodes; for MuJoCo on a machine with a core to spare)."""

    def __init__(
        self, env: EnvSpec, num_envs: int, *, async_envs: bool = False,
        ref_scores: tuple[float, float] | None = None,
        env_kwargs: dict[str, Any] | None = None, vector: str | None = None,
        env_threads: int = 1,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if vector is None:
            vector = "async" if async_envs else "lockstep"
        elif vector not in VECTOR_KINDS:
            raise ValueError(f"vector must be one of {VECTOR_KINDS}, got {vector!r}")
        elif async_envs and vector != "async":
            raise ValueError(f"async_envs=True contradicts vector={vector!r}")
        if env_threads != 1 and vector != "lockstep":
            raise ValueError(f"env_threads applies to vector='lockstep', not {vector!r}")
        self.env_spec = env
        self.env_kwargs = dict(env_kwargs or {})
        self.num_envs = int(num_envs)
        self.ref_scores = ref_scores
        self.vector = vector
        fns = [_make_env_fn(env, **(env_kwargs or {}))] * self.num_envs
        mode = gym.vector.AutoresetMode.DISABLED
        if vector == "lockstep":
            from offrl.envs.vector import LockstepVectorEnv

            self.envs: gym.vector.VectorEnv | LockstepVectorEnv = LockstepVectorEnv(
                fns, threads=env_threads)
        elif vector == "async":
            self.envs = gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode)
        else:
            self.envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)

    @property
    def observation_shape(self) -> tuple[int, ...]:
        """One env's observation shape: each row of what `policy.act` gets is this."""
        return tuple(self.envs.single_observation_space.shape)

    def check_observation_shape(self, expected: Sequence[int], what: str) -> None:
        """Fail before any episode when the envs' observations are not of the shape a policy
        learned from (`what` names that side: the dataset, a checkpoint)."""
        if self.observation_shape != tuple(expected):
            kw = f" with kwargs {self.env_kwargs}" if self.env_kwargs else ""
            name = self.env_spec if isinstance(self.env_spec, str) else "(factory)"
            raise ValueError(
                f"observation shapes differ: {what} has {tuple(expected)}, the evaluation env "
                f"{name}{kw} gives {self.observation_shape} (check the env id; a dataset's "
                f"recorded env kwargs, e.g. obs_mode='grid', apply only to its own env id)")

    def close(self) -> None:
        self.envs.close()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def evaluate(
        self, policy: Policy, num_episodes: int, *,
        target_returns: Sequence[float | None] = (None,), seed: int = 0,
    ) -> list[EvalResult]:
        """One `EvalResult` per target return; every target replays the same episode seeds."""
        return [self.run(policy, num_episodes, target, seed) for target in target_returns]

    def run(
        self, policy: Policy, num_episodes: int, target_return: float | None, seed: int,
    ) -> EvalResult:
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
        n, venv = self.num_envs, self.envs
        seeds = seed + np.arange(num_episodes, dtype=np.int64)  # (E,)
        returns = np.zeros(num_episodes)
        lengths = np.zeros(num_episodes, dtype=np.int64)
        succ_out = np.zeros(num_episodes, dtype=bool)
        saw_success = False

        quota = np.array([len(range(e, num_episodes, n)) for e in range(n)])  # (N,)
        done_count = np.zeros(n, dtype=np.int64)  # episodes finished per env
        active = quota > 0  # (N,) env still owes episodes
        episode = np.arange(n)  # (N,) episode id each env is running (valid where active)

        def reset_seeds(mask: np.ndarray) -> list[int | None]:
            # Idle envs get no seed: their episodes are never recorded.
            return [int(seeds[episode[e]]) if mask[e] and active[e] else None for e in range(n)]

        obs, _ = venv.reset(seed=reset_seeds(np.ones(n, dtype=bool)))
        policy.reset(np.ones(n, dtype=bool), target_return)
        ep_return = np.zeros(n)  # (N,) running return of the current episode
        ep_length = np.zeros(n, dtype=np.int64)
        ep_success = np.zeros(n, dtype=bool)
        last_reward = np.zeros(n, dtype=np.float32)

        while active.any():
            with torch.no_grad():
                action = policy.act(obs, last_reward)
            obs, reward, terminated, truncated, info = venv.step(action)
            reward = np.asarray(reward, dtype=np.float64)
            ep_return += reward
            ep_length += 1
            if "success" in info:
                saw_success = True
                # Success if the env reported it on any step of the episode.
                ep_success |= np.asarray(info["success"], dtype=bool) & info["_success"]
            last_reward = reward.astype(np.float32)
            ended = np.asarray(terminated) | np.asarray(truncated)
            if not ended.any():
                continue
            for e in np.flatnonzero(ended & active):
                j = episode[e]
                returns[j], lengths[j], succ_out[j] = ep_return[e], ep_length[e], ep_success[e]
                done_count[e] += 1
                if done_count[e] < quota[e]:
                    episode[e] += n  # this env's next assigned episode
                else:
                    active[e] = False
            if not active.any():
                break
            obs, _ = venv.reset(seed=reset_seeds(ended), options={"reset_mask": ended})
            policy.reset(ended, target_return)
            ep_return[ended], ep_length[ended], ep_success[ended] = 0.0, 0, False
            last_reward[ended] = 0.0

        return EvalResult(
            target_return=target_return, seeds=seeds, returns=returns, lengths=lengths,
            successes=succ_out if saw_success else None, ref_scores=self.ref_scores,
        )


def summarize(results: Sequence[EvalResult]) -> dict[str, float]:
    """Flat `eval/<target>/<stat>` scalars for a target sweep."""
    out = {}
    for res in results:
        tag = target_tag(res.target_return)
        out.update({f"eval/{tag}/{k}": v for k, v in res.summary().items()})
    return out


def primary_score(results: Sequence[EvalResult]) -> float:
    """The number that ranks checkpoints: normalized score (else mean return) at the first
    target. The first target, not the best over targets, so ranking has no selection bias."""
    summary = results[0].summary()
    return summary.get("normalized_score", summary["return_mean"])


def reference_scores(env_id: str | None, dataset_meta: Any = None) -> tuple[float, float] | None:
    """(random, expert) returns from the dataset metadata, else the env facts table."""
    lo = getattr(dataset_meta, "ref_min_score", None)
    hi = getattr(dataset_meta, "ref_max_score", None)
    if lo is not None and hi is not None:
        return float(lo), float(hi)
    from offrl.envs.facts import find_env_facts

    facts = find_env_facts(env_id)
    if facts is not None and facts.ref_min_score is not None and facts.ref_max_score is not None:
        return facts.ref_min_score, facts.ref_max_score
    return None


def record_video(
    policy_factory: Callable[[int], Policy], env_id: str, path: str | Path, *,
    seed: int = 0, target_return: float | None = None, fps: int = 30,
    env_kwargs: dict[str, Any] | None = None,
) -> Path | None:
    """Render one episode to `path` (.mp4 or .gif). Returns None, with the reason printed,
    when imageio or rendering (e.g. MuJoCo without an OpenGL backend) is unavailable.
    `env_kwargs`: `make_env` kwargs of the evaluation env (as given to `Evaluator`)."""
    try:
        import imageio.v2 as imageio
    except ImportError:
        print("video skipped: imageio is not installed (pip install imageio imageio-ffmpeg)")
        return None
    from offrl.envs.make import make_env

    try:
        with warnings.catch_warnings():  # gymnasium warns before the env itself refuses
            warnings.simplefilter("ignore", UserWarning)
            env = make_env(env_id, **{**(env_kwargs or {}), "render_mode": "rgb_array"})
    except Exception as exc:  # rendering backends fail in many ways
        print(f"video skipped: cannot make {env_id} with render_mode='rgb_array' ({exc})")
        return None
    policy = policy_factory(1)
    frames = []
    try:
        obs, _ = env.reset(seed=seed)
        policy.reset(np.ones(1, dtype=bool), target_return)
        reward, done = 0.0, False
        while not done:
            frames.append(env.render())
            with torch.no_grad():
                action = policy.act(obs[None], np.array([reward], dtype=np.float32))[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        frames.append(env.render())
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # GIF (pillow) takes a frame duration in ms, video writers (ffmpeg) a frame rate.
        timing = {"duration": 1000 / fps} if path.suffix.lower() == ".gif" else {"fps": fps}
        imageio.mimsave(path, frames, **timing)
    except Exception as exc:  # a missing GL context or ffmpeg surfaces only here
        hint = (" (MuJoCo without a display: set MUJOCO_GL=egl or MUJOCO_GL=osmesa)"
                if "GL" in f"{type(exc).__name__}{exc}" else "")
        print(f"video skipped: rendering or writing failed ({type(exc).__name__}: {exc}){hint}")
        return None
    finally:
        env.close()
    return path


def evaluate_checkpoint(
    path: str | Path, *, num_episodes: int | None = None,
    target_returns: Sequence[float] | None = None, num_envs: int | None = None,
    seed: int | None = None, env_id: str | None = None, device: str = "cpu",
    async_envs: bool = False, video: str | Path | None = None,
    config_overrides: dict[str, Any] | None = None, vector: str | None = None,
    env_threads: int = 1,
) -> tuple[list[EvalResult], dict[str, Any]]:
    """Evaluate a checkpoint (file or run folder) from the checkpoint alone.

    Defaults come from the run: its env (id and kwargs: the dataset's recorded env kwargs,
    under the run config's), episode count, target returns and evaluation seeds (so the
    numbers match the run's own last evaluation for a deterministic policy). Another
    `env_id` gets only the config's kwargs; its observations must have the checkpoint's shape.
    `video`: also render the first episode (first target) to this file.
    `config_overrides`: acting-time fields of the algorithm's config to change (e.g.
    {"kv_cache": True} for DT); a field the config lacks is an error.
    `vector`: how the envs are stepped (see `Evaluator`; None = lockstep, or async with
    `async_envs`); `env_threads`: lockstep only, threads stepping the envs (see `Evaluator`).
    Returns the results and the checkpoint's metadata (step, algo, env, dataset)."""
    from offrl.algorithm import is_return_conditioned
    from offrl.checkpoint import load_checkpoint, resolve_checkpoint, restore_algorithm
    from offrl.config import env_kwargs, from_dict

    ckpt = resolve_checkpoint(path)
    payload = load_checkpoint(ckpt)
    config = from_dict(payload["run_config"], f"{ckpt} run_config")
    algorithm = restore_algorithm(payload, device, ckpt)
    if config_overrides:
        import dataclasses

        fields = {f.name for f in dataclasses.fields(algorithm.config)}
        unknown = sorted(set(config_overrides) - fields)
        if unknown:
            raise ValueError(f"{ckpt}: {payload['algo']} has no config field(s) {unknown}")
        algorithm.config = dataclasses.replace(algorithm.config, **config_overrides)
    env = env_id or payload.get("env_id")
    if env is None:
        raise ValueError(f"{ckpt}: the run had no evaluation env; pass env_id (--env-id)")
    episodes = num_episodes or config.num_eval_episodes or 10
    if not is_return_conditioned(type(algorithm)):
        targets: Sequence[float | None] = (None,)  # the policy ignores targets
    else:
        targets = tuple(target_returns or payload.get("eval_targets") or (None,))
    n = min(num_envs or config.num_eval_envs, episodes)
    same_env = env == payload.get("env_id")
    ref = payload.get("ref_scores") if same_env else reference_scores(env)
    seed = config.resolved_eval_seed if seed is None else seed
    # The recorded kwargs belong to the run's env; checkpoints older than them have none.
    kwargs = env_kwargs(config, payload.get("env_kwargs") if same_env else None)
    with Evaluator(env, n, async_envs=async_envs, env_kwargs=kwargs, vector=vector,
                   env_threads=env_threads,
                   ref_scores=tuple(ref) if ref is not None else None) as ev:
        trained = payload.get("dataset", {}).get("obs_shape")
        if trained is not None:
            ev.check_observation_shape(trained, f"checkpoint {ckpt.name} (trained on its dataset)")
        results = ev.evaluate(algorithm.make_policy(n), episodes, target_returns=targets,
                              seed=seed)
    meta = {"checkpoint": str(ckpt), "step": payload["step"], "algo": payload["algo"],
            "env_id": env, "env_kwargs": kwargs,
            "dataset": payload.get("dataset", {}).get("name"), "video": None}
    if video is not None:
        written = record_video(algorithm.make_policy, env, video, seed=seed,
                               target_return=targets[0], env_kwargs=kwargs)
        meta["video"] = str(written) if written else None
    return results, meta
