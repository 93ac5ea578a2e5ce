"""The run configuration shared by every algorithm, and its YAML form.

`RunConfig` holds what the trainer and evaluator need (dataset, cadence, seeds, device) and
nests the algorithm's own frozen `Config` dataclass as `algo_config`. One vocabulary for all
algorithms: a YAML file lists the run keys at the top level and the algorithm's keys under
`algo_config:`. Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

import tyro

C = TypeVar("C")

ALGO_HELP = "dt | cql | bc | pbc (or module:Class for an algorithm outside offrl)"


class ConfigError(ValueError):
    """A bad configuration value or file; the message names the file, key and expectation."""


@dataclass(frozen=True)
class RunConfig(Generic[C]):
    """Train one offline RL algorithm on one dataset, evaluating it in its gymnasium env."""

    algo: str = ""
    """Algorithm: dt | cql | bc | pbc (or module:Class for an algorithm outside offrl).
    `offrl train --algo X --help` lists X's hyperparameters."""
    dataset: str = ""
    """Dataset source: minari:<id> | d4rl:<name> | path (.hdf5, .pkl, .npz, Minari directory)."""
    env_id: Annotated[str | None, tyro.conf.arg(aliases=("--env",))] = None
    """Gymnasium id of the evaluation env; None takes it from the dataset metadata."""
    seed: int = 0
    """Seed for network init, batch sampling and (offset) evaluation episodes."""
    total_steps: Annotated[int, tyro.conf.arg(aliases=("--steps",))] = 100_000
    """Number of gradient steps."""
    log_every: int = 1000
    """Write train/* and time/* scalars (averaged over the interval) every this many steps."""
    eval_every: int = 10_000
    """Evaluate every this many steps (and always after the last step); 0: only at the end."""
    num_eval_episodes: int = 10
    """Episodes per evaluation and per target return; 0 disables evaluation."""
    num_eval_envs: int = 10
    """Envs stepped in lockstep during evaluation (capped at num_eval_episodes)."""
    async_envs: bool = False
    """Step evaluation envs in subprocesses (gymnasium AsyncVectorEnv) instead of in-process."""
    target_returns: tuple[float, ...] | None = None
    """Returns-to-go to condition on (DT); None: the env facts' defaults, else the dataset's
    best episode return. Ignored by policies that are not return-conditioned."""
    eval_seed: int | None = None
    """Episode j of every evaluation resets its env with seed eval_seed + j; None:
    1_000_000 + 1000 * seed (far from seeds used to collect data)."""
    checkpoint_every: int = 10_000
    """Write a checkpoint every this many steps (and after the last step); 0: only at the end."""
    keep_checkpoints: int = 3
    """Keep the newest this many periodic checkpoints (plus best.pt, the best evaluation)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:<i>; auto picks cuda when available."""
    num_threads: int = 0
    """Torch CPU threads (torch.set_num_threads); 0 keeps torch's default. Small networks
    often train faster on 1 thread, and runs sharing a machine should split its cores."""
    flush_denormal: bool = True
    """Flush subnormal floats to zero on the CPU while `Trainer.run` trains and evaluates
    (`torch.set_flush_denormal`; x86 FTZ/DAZ, turned off again at the end). Adam's first
    moments of units that stopped receiving gradient (dead ReLUs) decay by beta1 each step
    into the subnormal range (below 1.2e-38) after ~800 steps, and CPU arithmetic on
    subnormals is many times slower: BC on the bench's data slowed from ~890 to ~680
    updates/s over 8k updates without it and held ~900 with it. The values flushed are far
    below anything that moves a parameter (an Adam step of ~1e-31 of the learning rate):
    those 8k BC updates ended with bit-identical parameters and losses either way. False
    keeps IEEE subnormals."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Numerics of the update's forward pass: fp32, or bf16 mixed precision (torch.autocast:
    matmuls in bfloat16, weights, gradients and optimizer state stay float32). bf16 is several
    times faster on CPUs with AMX / AVX512-BF16 and on recent GPUs; fp32 keeps results
    comparable with published numbers."""
    reward: Literal["dense", "delayed"] = "dense"
    """dense: the dataset's rewards. delayed: the DT paper's delayed-return setting (sec.
    5.3): each episode's whole return paid on its last step, in the training data
    (`EpisodeDataset.delayed_rewards`) and in the evaluation env (`DelayedReward`) alike."""
    runs_root: str = "runs"
    """Runs go to <runs_root>/<dataset>/<algo>/<seed>-<time>/ unless run_dir is given."""
    run_dir: str | None = None
    """Exact run folder (overrides runs_root)."""
    download: bool = False
    """Allow downloading minari:/d4rl: datasets that are not cached (needs network)."""
    algo_config: C = None  # type: ignore[assignment]  # filled with the algorithm's defaults
    """The algorithm's own hyperparameters."""

    def __post_init__(self) -> None:
        if self.algo_config is None:
            object.__setattr__(self, "algo_config", resolve_algorithm(self.algo).Config())
        problems = []
        for name in ("total_steps", "log_every", "num_eval_envs"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "num_eval_episodes", "checkpoint_every"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_threads < 0:
            problems.append(f"num_threads must be >= 0, got {self.num_threads}")
        if self.keep_checkpoints < 1:
            problems.append(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            problems.append(f"device must be auto | cpu | cuda | cuda:<i>, got '{self.device}'")
        if self.precision not in ("fp32", "bf16"):
            problems.append(f"precision must be fp32 | bf16, got '{self.precision}'")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def resolved_eval_seed(self) -> int:
        return self.eval_seed if self.eval_seed is not None else 1_000_000 + 1000 * self.seed


def resolve_algorithm(name: str) -> type:
    """The algorithm class for a registered name or a `module:Class` path."""
    if not name:
        raise ConfigError(f"no algo given; expected {ALGO_HELP}")
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"algo '{name}': cannot import {attr} from {module} ({exc})") from exc
    from offrl.algorithms import ALGORITHMS

    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algo '{name}'; expected {ALGO_HELP}")
    return ALGORITHMS[name]


# ---- dict / YAML form ----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """YAML-safe form: tuples -> lists, nested dataclasses -> dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def to_dict(config: RunConfig) -> dict[str, Any]:
    return _plain(config)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a YAML value against a field's type hint, converting lists to tuples and ints
    to floats where the field wants them."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: expected one of {typing.get_args(hint)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        items = [_coerce(v, args[0], where) for v in value] if args else list(value)
        return tuple(items) if origin is tuple else items
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint in (int, bool, str):
        if type(value) is not hint:
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return _dataclass_from_dict(hint, value, where)
    return value  # Any or an exotic type: trust the dataclass's own checks


def _dataclass_from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; {cls.__name__} has {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def from_dict(data: Mapping[str, Any], where: str = "config") -> RunConfig:
    """A `RunConfig` from its dict form; `where` (a file name) prefixes error messages."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping at the top level, "
                          f"got {type(data).__name__}")
    data = dict(data)
    algo_cfg = data.pop("algo_config", None)
    run_fields = {f.name for f in dataclasses.fields(RunConfig)} - {"algo_config"}
    unknown = sorted(set(data) - run_fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; run keys are {sorted(run_fields)} "
                          f"and the algorithm's go under 'algo_config:'")
    hints = typing.get_type_hints(RunConfig)
    kwargs = {k: _coerce(v, hints[k], f"{where}: {k}") for k, v in data.items()}
    algo_cls = resolve_algorithm(kwargs.get("algo", RunConfig.algo))
    if algo_cfg is not None:
        kwargs["algo_config"] = _dataclass_from_dict(algo_cls.Config, algo_cfg,
                                                     f"{where}: algo_config")
    try:
        return RunConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_yaml(path: str | Path) -> RunConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return from_dict(data or {}, str(path))


def dump_yaml(config: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(config), sort_keys=False)


def replace(config: RunConfig, **changes: Any) -> RunConfig:
    """`dataclasses.replace` that keeps the algorithm config when the algo is unchanged and
    resets it to the new algorithm's defaults when `algo` changes without an `algo_config`."""
    if "algo" in changes and changes["algo"] != config.algo and "algo_config" not in changes:
        changes["algo_config"] = None
    return dataclasses.replace(config, **changes)


def env_kwargs(config: RunConfig, recorded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments for the evaluation env's `make_env` (the trainer's and
    `evaluate_checkpoint`'s eval envs must be built alike): the `gym.make` kwargs the dataset
    was recorded with (`recorded`, `DatasetMeta.env_kwargs`, e.g. Key-to-Door's
    obs_mode="grid"), overlaid with those the run's config implies; the config's win where both
    set a key."""
    implied = {"reward": "delayed"} if config.reward == "delayed" else {}
    return {**(recorded or {}), **implied}


__all__ = [
    "ALGO_HELP", "ConfigError", "RunConfig", "dump_yaml", "env_kwargs", "from_dict", "load_yaml",
    "replace", "resolve_algorithm", "to_dict",
]
