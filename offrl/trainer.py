"""The one training loop: sample -> update, with logging, evaluation and checkpoint cadence.

The trainer knows nothing about losses or networks: it drives any `offrl.algorithm.Algorithm`
(`make_sampler`, `update`, `make_policy`, `state_dict`) and owns everything around it:
seeding (once, here), the run folder, TensorBoard + metrics.jsonl + summary.json, the
progress bar, periodic evaluation, atomic checkpoints (last N + best) and exact resume.

Exact resume: a checkpoint holds the algorithm state (networks, optimizers, schedules,
normalizer, counters), the sampler's generator, the global torch/numpy/python RNG states (for
dropout and anything else drawing from them), the step, and the partial log-interval sums.
A run resumed from it on the same device replays the uninterrupted run bit for bit (tested on
CPU with a SIGKILLed subprocess). Metrics rows and TensorBoard events the killed process wrote
after its last checkpoint are dropped on resume; resuming from a checkpoint older than the
run's newest one is refused (it would rewrite that history).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from offrl.algorithm import is_return_conditioned
from offrl.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    CheckpointManager,
    library_versions,
    load_checkpoint,
    periodic_checkpoints,
    resolve_checkpoint,
)
from offrl.config import (
    ConfigError,
    RunConfig,
    dump_yaml,
    env_kwargs,
    from_dict,
    resolve_algorithm,
    to_dict,
)
from offrl.evaluator import (
    EvalResult,
    Evaluator,
    primary_score,
    reference_scores,
    summarize,
    target_tag,
)
from offrl.logging import JsonlLogger, Logger, MultiLogger, TensorBoardLogger

# Fields a resumed run may change: they steer cadence, evaluation and hardware, not what is
# learned. Everything else must match the checkpoint's config.
RESUMABLE_CHANGES = frozenset({
    "total_steps", "log_every", "eval_every", "num_eval_episodes", "num_eval_envs", "async_envs",
    "target_returns", "eval_seed", "checkpoint_every", "keep_checkpoints", "device", "num_threads",
    "flush_denormal", "download", "runs_root", "run_dir",
})


class NonFiniteMetricError(RuntimeError):
    """An update returned NaN or inf; the run stopped and kept its last good checkpoint."""

    def __init__(self, metric: str, value: float, step: int, checkpoint: Path | None) -> None:
        kept = f"last good checkpoint: {checkpoint}" if checkpoint else "no checkpoint written yet"
        super().__init__(f"metric '{metric}' became {value} at step {step}; training stopped "
                         f"({kept})")
        self.metric, self.value, self.step, self.checkpoint = metric, value, step, checkpoint


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available")
    return torch.device(device)


def _cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (torch's own, private, capability probes)."""
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(p() for p in probes if p is not None)


def autocast_context(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """The numerics of one update: nothing for fp32; for bf16, `torch.autocast` over the whole
    `update` call (the trainer cannot see inside it): matmuls and convolutions run in bfloat16
    while parameters, gradients (cast back by autocast's own backward) and optimizer state stay
    float32. Backward ops run in the dtype their forward ops ran in, with or without autocast,
    so covering the backward and the optimizer step changes nothing there."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        if device.type == "cpu" and not _cpu_has_bf16():
            warnings.warn("precision bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 "
                          "matmuls are emulated and likely slower than fp32", stacklevel=2)
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ConfigError(f"precision must be fp32 | bf16, got '{precision}'")


def seed_everything(seed: int) -> None:
    """The one global seeding (entry point only): torch (CPU and CUDA), numpy, random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeded for third-party code that uses it)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),  # noqa: NPY002
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])


def default_targets(algo_cls: type, config: RunConfig, env_id: str | None,
                    dataset_returns: np.ndarray) -> tuple[float | None, ...]:
    if not is_return_conditioned(algo_cls):
        return (None,)
    if config.target_returns:
        return tuple(float(t) for t in config.target_returns)
    own = getattr(config.algo_config, "target_return", None)  # e.g. DTConfig.target_return
    if own is not None:
        return (float(own),)
    from offrl.envs.facts import find_env_facts

    facts = find_env_facts(env_id)
    if facts is not None and facts.target_returns:
        return facts.target_returns
    return (float(np.max(dataset_returns)),)  # the best return seen in the data


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "dataset"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=1, default=float) + "\n")


def _run_dir_of(checkpoint: Path) -> Path:
    folder = checkpoint.parent
    return folder.parent if folder.name == "checkpoints" else folder


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    final_eval: dict[str, float]  # eval/<target>/<stat> scalars of the last evaluation
    best_score: float | None
    summary: dict[str, Any] = field(default_factory=dict)


class _Interval:
    """Sums of train metrics and timings since the last log line (part of the checkpoint)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.sample_s = 0.0
        self.update_s = 0.0

    def add(self, metrics: dict[str, float], sample_s: float, update_s: float) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.sample_s += sample_s
        self.update_s += update_s

    def scalars(self) -> dict[str, float]:
        n = max(self.count, 1)
        out = {f"train/{k}": v / n for k, v in self.sums.items()}
        busy = self.sample_s + self.update_s
        out["time/updates_per_s"] = self.count / busy if busy > 0 else 0.0
        out["time/sample_ms"] = 1000.0 * self.sample_s / n
        out["time/update_ms"] = 1000.0 * self.update_s / n
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.count = dict(state["sums"]), int(state["count"])


class Trainer:
    """Build with a `RunConfig` (fresh run) and/or `resume=` a checkpoint or run folder."""

    def __init__(
        self, config: RunConfig | None = None, *, resume: str | Path | None = None,
        progress: bool = True, hooks: Sequence[Callable[[Trainer, int], None]] = (),
        logger: Logger | None = None,
    ) -> None:
        if config is None and resume is None:
            raise ConfigError("Trainer needs a config or a checkpoint to resume")
        self.progress, self.hooks = progress, list(hooks)
        payload = None
        if resume is not None:
            ckpt = resolve_checkpoint(resume)
            payload = load_checkpoint(ckpt)
            saved = from_dict(payload["run_config"], f"{ckpt} run_config")
            config = self._merge_resume(saved, config, ckpt)
            self.run_dir = _run_dir_of(ckpt)
            self.resumed_from: Path | None = ckpt
        else:
            self.resumed_from = None
        assert config is not None
        self.config = config
        self.algo_cls = resolve_algorithm(config.algo)
        self.device = resolve_device(config.device)
        if config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        if payload is None:
            seed_everything(config.seed)

        from offrl.datasets import load_dataset

        self.dataset = load_dataset(config.dataset, env_id=config.env_id, download=config.download)
        if config.reward == "delayed":
            self.dataset = self.dataset.delayed_rewards()
        self.env_id = config.env_id or self.dataset.meta.env_id
        # gym.make kwargs the data was recorded with (the loader keeps them only for the
        # recorded env id); `env_kwargs(config, ...)` lays the config's own over them.
        self.recorded_env_kwargs = dict(self.dataset.meta.env_kwargs)
        if config.num_eval_episodes > 0 and self.env_id is None:
            raise ConfigError(f"dataset '{config.dataset}' does not name its env; pass --env-id "
                              f"(or --num-eval-episodes 0 to train without evaluation)")
        self.ref_scores = reference_scores(self.env_id, self.dataset.meta)
        self.eval_targets = default_targets(self.algo_cls, config, self.env_id,
                                            self.dataset.episode_returns)
        self._evaluator: Evaluator | None = None
        if config.num_eval_episodes > 0:
            try:  # build the envs now: a bad env id fails before any work
                _ = self.evaluator
            except gym.error.Error as exc:
                kw = (f" with the dataset's recorded kwargs {self.recorded_env_kwargs}"
                      if self.recorded_env_kwargs else "")
                raise ConfigError(f"cannot make evaluation env '{self.env_id}'{kw} ({exc}); "
                                  f"pass --env-id, or --num-eval-episodes 0") from exc
        try:
            if self._evaluator is not None:  # a wrong eval env fails now, not at the first eval
                try:
                    self._evaluator.check_observation_shape(
                        self.dataset.observations.shape[1:], f"dataset '{config.dataset}'")
                except ValueError as exc:
                    raise ConfigError(str(exc)) from exc
            self._setup(config, payload, logger)
        except BaseException:
            self.close_envs()
            raise

    def _setup(self, config: RunConfig, payload: dict[str, Any] | None,
               logger: Logger | None) -> None:
        if payload is None:
            self.algorithm = self.algo_cls.from_dataset(config.algo_config, self.dataset,
                                                        self.device)
            self.sampler = self.algorithm.make_sampler(self.dataset, config.seed)
            self.step = 0
            self.best_score: float | None = None
            self.best_step: int | None = None
            self.run_dir = Path(config.run_dir) if config.run_dir else (
                Path(config.runs_root) / _slug(self.dataset.meta.name) / _slug(config.algo)
                / f"{config.seed}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")
            if self.run_dir.exists() and any(self.run_dir.iterdir()):
                raise ConfigError(f"run folder '{self.run_dir}' exists and is not empty; "
                                  f"pass --resume {self.run_dir} to continue it")
        self.interval = _Interval()
        if payload is not None:
            self._restore(payload)
            later = [p.name for s, p in periodic_checkpoints(self.run_dir / "checkpoints")
                     if s > self.step]
            if later:  # resuming would overwrite that history: refuse rather than delete it
                raise ConfigError(
                    f"{self.resumed_from} (step {self.step}) is older than {later[-1]} in the "
                    f"same run; resume from the run folder (its newest checkpoint), or copy "
                    f"this checkpoint into a new folder to branch from it")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resume_step = self.step if payload is not None else None
        _write_text(self.run_dir / "config.yaml", dump_yaml(config))
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", config.keep_checkpoints)
        self.last_checkpoint: Path | None = self.resumed_from
        self.logger = logger or MultiLogger([
            TensorBoardLogger(self.run_dir, resume_step),
            JsonlLogger(self.run_dir / "metrics.jsonl", resume_step),
        ])
        self.logger.text("config", dump_yaml(config))
        self.last_eval: dict[str, float] = {}

    # ---- resume ---------------------------------------------------------------------------

    @staticmethod
    def _merge_resume(saved: RunConfig, given: RunConfig | None, ckpt: Path) -> RunConfig:
        if given is None:
            return saved
        changed = [f for f in to_dict(saved) if to_dict(saved)[f] != to_dict(given)[f]]
        bad = [f for f in changed if f not in RESUMABLE_CHANGES]
        if bad:
            diffs = ", ".join(f"{f}: {to_dict(saved)[f]!r} -> {to_dict(given)[f]!r}" for f in bad)
            raise ConfigError(f"cannot resume {ckpt} with a different {', '.join(bad)} ({diffs}); "
                              f"only {sorted(RESUMABLE_CHANGES)} may change")
        return given

    def _restore(self, payload: dict[str, Any]) -> None:
        src = self.resumed_from
        if payload["algo"] != self.config.algo:
            raise CheckpointError(f"{src}: checkpoint is for algo '{payload['algo']}', "
                                  f"not '{self.config.algo}'")
        saved_ds = payload.get("dataset", {})
        for key, now in (("obs_shape", list(self.dataset.observations.shape[1:])),
                         ("action_space", str(self.dataset.action_space))):
            if key in saved_ds and saved_ds[key] != now:
                raise CheckpointError(f"{src}: checkpoint was trained with {key} "
                                      f"{saved_ds[key]}, dataset '{self.config.dataset}' has {now}")
        try:
            self.algorithm = self.algo_cls.from_state_dict(payload["algorithm"], self.device)
            self.sampler = self.algorithm.make_sampler(self.dataset, self.config.seed)
            self.sampler.load_state_dict(payload["sampler"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{src}: algorithm or sampler state does not fit "
                                  f"'{self.config.algo}' ({type(exc).__name__}: {exc})") from exc
        trainer = payload["trainer"]
        self.step = int(payload["step"])
        self.best_score, self.best_step = trainer["best_score"], trainer["best_step"]
        self.interval.load_state_dict(trainer["interval"])
        set_rng_state(payload["rng"])

    # ---- checkpoints ----------------------------------------------------------------------

    def checkpoint_payload(self) -> dict[str, Any]:
        ds = self.dataset
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "algo": self.config.algo, "run_config": to_dict(self.config),
            "algorithm": self.algorithm.state_dict(), "sampler": self.sampler.state_dict(),
            "rng": rng_state(), "step": self.step,
            "trainer": {"best_score": self.best_score, "best_step": self.best_step,
                        "interval": self.interval.state_dict()},
            "env_id": self.env_id, "env_kwargs": dict(self.recorded_env_kwargs),
            "eval_targets": list(self.eval_targets),
            "ref_scores": self.ref_scores,
            "dataset": {"name": ds.meta.name, "source": ds.meta.source,
                        "obs_shape": list(ds.observations.shape[1:]),
                        "action_space": str(ds.action_space), "num_steps": ds.num_steps},
            "versions": library_versions(), "time": time.time(),
        }

    def save_checkpoint(self) -> Path:
        self.logger.flush()  # events up to this step are on disk before the checkpoint is
        self.last_checkpoint = self.checkpoints.save(self.step, self.checkpoint_payload())
        return self.last_checkpoint

    # ---- evaluation -----------------------------------------------------------------------

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            assert self.env_id is not None
            n = min(self.config.num_eval_envs, self.config.num_eval_episodes)
            self._evaluator = Evaluator(
                self.env_id, n, async_envs=self.config.async_envs, ref_scores=self.ref_scores,
                env_kwargs=env_kwargs(self.config, self.recorded_env_kwargs))
        return self._evaluator

    def evaluate(self) -> list[EvalResult]:
        policy = self.algorithm.make_policy(self.evaluator.num_envs)
        return self.evaluator.evaluate(policy, self.config.num_eval_episodes,
                                       target_returns=self.eval_targets,
                                       seed=self.config.resolved_eval_seed)

    def _eval_and_log(self) -> None:
        t0 = time.perf_counter()
        results = self.evaluate()
        scalars = summarize(results)
        # Untargeted names mirror the first target so runs of different algorithms overlay.
        first = target_tag(results[0].target_return)
        for stat in ("return_mean", "normalized_score", "success_rate"):
            if f"eval/{first}/{stat}" in scalars:
                scalars[f"eval/{stat}"] = scalars[f"eval/{first}/{stat}"]
        scalars["time/eval_s"] = time.perf_counter() - t0
        self.logger.scalars(self.step, scalars)
        self.last_eval = scalars
        score = primary_score(results)
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_step = score, self.step
            self.checkpoints.save_best(self.checkpoint_payload())

    # ---- the loop -------------------------------------------------------------------------

    def _due(self, every: int) -> bool:
        return self.step == self.config.total_steps or (every > 0 and self.step % every == 0)

    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg = self.config
        bar = tqdm(total=cfg.total_steps, initial=self.step, disable=not self.progress,
                   desc=f"{cfg.algo} {self.dataset.meta.name}", dynamic_ncols=True, unit="step")
        start_step, t_start = self.step, time.perf_counter()
        train_s = 0.0
        autocast = autocast_context(self.device, cfg.precision)  # reusable, entered per update
        status, error = "finished", None
        # This thread's (and threads it starts') FTZ/DAZ flags; torch has no getter, so the
        # end of the run turns them off (the process default).
        flushing = cfg.flush_denormal and torch.set_flush_denormal(True)
        try:
            while self.step < cfg.total_steps:
                t0 = time.perf_counter()
                batch = self.sampler.sample()
                t1 = time.perf_counter()
                with autocast:
                    metrics = self.algorithm.update(batch)
                t2 = time.perf_counter()
                train_s += t2 - t0
                self.step += 1
                for name, value in metrics.items():
                    if not math.isfinite(value):
                        raise NonFiniteMetricError(f"train/{name}", value, self.step,
                                                   self.last_checkpoint)
                self.interval.add(metrics, t1 - t0, t2 - t1)
                if self._due(cfg.log_every):
                    scalars = self.interval.scalars()
                    scalars["time/elapsed_s"] = time.perf_counter() - t_start
                    self.logger.scalars(self.step, scalars)
                    self.interval = _Interval()
                    bar.set_postfix(self._postfix(scalars), refresh=False)
                if cfg.num_eval_episodes > 0 and self._due(cfg.eval_every):
                    self._eval_and_log()
                    bar.set_postfix(self._postfix({}), refresh=False)
                if self._due(cfg.checkpoint_every):
                    self.save_checkpoint()
                bar.update(1)
                for hook in self.hooks:
                    hook(self, self.step)
        except NonFiniteMetricError as exc:
            status, error = "diverged", str(exc)
            raise
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if flushing:
                torch.set_flush_denormal(False)
            bar.close()
            summary = self._summary(status, error, start_step, train_s,
                                    time.perf_counter() - t_start)
            _write_json(self.run_dir / "summary.json", summary)
            self.close()
        return TrainResult(self.run_dir, self.step, self.last_eval, self.best_score, summary)

    def _postfix(self, scalars: dict[str, float]) -> dict[str, str]:
        out = {k.split("/", 1)[1]: f"{v:.3g}" for k, v in scalars.items()
               if k.startswith("train/")}
        for stat in ("normalized_score", "success_rate", "return_mean"):
            if f"eval/{stat}" in self.last_eval:
                out[f"eval_{stat}"] = f"{self.last_eval[f'eval/{stat}']:.3g}"
                break
        return out

    def _summary(self, status: str, error: str | None, start_step: int, train_s: float,
                 wall_s: float) -> dict[str, Any]:
        done = self.step - start_step
        return {
            "status": status, "error": error, "algo": self.config.algo,
            "dataset": self.dataset.meta.name, "env_id": self.env_id, "seed": self.config.seed,
            "step": self.step, "total_steps": self.config.total_steps,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "wall_time_s": wall_s, "train_time_s": train_s,
            "updates_per_s": done / train_s if train_s > 0 else None,
            "eval_targets": list(self.eval_targets), "final_eval": self.last_eval,
            "best_score": self.best_score, "best_step": self.best_step,
            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "run_dir": str(self.run_dir),
        }

    def close_envs(self) -> None:
        if self._evaluator is not None:
            self._evaluator.close()
            self._evaluator = None

    def close(self) -> None:
        self.logger.close()
        self.close_envs()


def train(config: RunConfig | None = None, *, resume: str | Path | None = None,
          progress: bool = True) -> TrainResult:
    """Run (or resume) one training run; see `Trainer`."""
    return Trainer(config, resume=resume, progress=progress).run()
