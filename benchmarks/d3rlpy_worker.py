"""The d3rlpy 2.8.1 side of the training benchmark: a worker process that the harness drives.

Runs with `.venv-d3rlpy/bin/python` (d3rlpy pins gymnasium 1.0.0, so it has its own venv)
and imports nothing from offrl: it reads the same D4RL-layout HDF5 file, builds one d3rlpy
algorithm configured to the benchmark's architecture, then serves requests on stdin so the
harness can interleave its timed chunks with offrl's (both see the same machine load):

    -> {"cmd": "run", "updates": 50, "threads": 2}    <- {"seconds": 7.1}
    -> {"cmd": "quit"}

On start it answers {"ready": true, "flops_per_update": ..., "config": ..., ...}. One timed
update is what d3rlpy's own `fit` loop does per step: `dataset.sample_transition_batch` (or
`sample_trajectory_batch` for DT) and `algo.update(batch)`, whose returned losses are Python
floats (a host sync per step, as in offrl's trainer).

d3rlpy settings (the offrl defaults they mirror are in benchmarks/train_speed.py):
- every algorithm: `StandardObservationScaler` (offrl standardizes observations too), no
  action scaler (the data's actions already lie in [-1, 1]), `compile_graph=False` (d3rlpy's
  default), device cpu;
- BC: `BCConfig(batch_size=256, learning_rate=3e-4, policy_type="deterministic",
  encoder_factory=VectorEncoderFactory([256, 256]))`: MLP 11-256-256-3, tanh, MSE;
- CQL: `CQLConfig(batch_size=256, n_critics=2, n_action_samples=10,
  actor_encoder_factory=VectorEncoderFactory([256, 256, 256]), critic_encoder_factory=
  the same, alpha_learning_rate=0.0)` (a fixed conservative weight of 5, as offrl's default
  non-Lagrange CQL; learning rates are d3rlpy's defaults, equal to offrl's);
- DT: `DecisionTransformerConfig(batch_size=64, context_size=20, num_heads=1, num_layers=3,
  encoder_factory=VectorEncoderFactory([128], exclude_last_activation=True)` (one linear
  state embedding of width 128, as in the paper), `max_timestep=1000, activation_type="relu",
  position_encoding_type=SIMPLE, learning_rate=1e-4, optim_factory=AdamWFactory(
  weight_decay=1e-4, clip_grad_norm=0.25, lr_scheduler_factory=WarmupSchedulerFactory(
  10000)), reward_scaler=MultiplyRewardScaler(0.001))`: returns-to-go / 1000 as in offrl.

    .venv-d3rlpy/bin/python benchmarks/d3rlpy_worker.py --data FILE.hdf5 --algo bc
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # flops.py, run as a plain script
from flops import count_flops  # noqa: E402


def load_dataset(path: Path) -> Any:
    import d3rlpy

    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in ("observations", "actions", "rewards", "terminals",
                                      "timeouts")}
    return d3rlpy.dataset.MDPDataset(
        observations=data["observations"].astype(np.float32),
        actions=data["actions"].astype(np.float32),
        rewards=data["rewards"].astype(np.float32),
        terminals=data["terminals"].astype(np.float32),
        timeouts=data["timeouts"].astype(np.float32),
        action_space=d3rlpy.ActionSpace.CONTINUOUS,
    )


def make_algo(name: str, dataset: Any, device: str) -> tuple[Any, Callable[[], Any]]:
    """(algorithm built for `dataset`, the `fit` loop's batch sampler) for bc | cql | dt."""
    import d3rlpy
    from d3rlpy.algos.utility import (
        build_scalers_with_trajectory_slicer,
        build_scalers_with_transition_picker,
    )
    from d3rlpy.models import VectorEncoderFactory
    from d3rlpy.preprocessing import MultiplyRewardScaler, StandardObservationScaler

    scaler = StandardObservationScaler()
    if name == "bc":
        config = d3rlpy.algos.BCConfig(
            batch_size=256, learning_rate=3e-4, policy_type="deterministic",
            encoder_factory=VectorEncoderFactory(hidden_units=[256, 256]),
            observation_scaler=scaler)
    elif name == "cql":
        config = d3rlpy.algos.CQLConfig(
            batch_size=256, n_critics=2, n_action_samples=10, conservative_weight=5.0,
            alpha_learning_rate=0.0,
            actor_encoder_factory=VectorEncoderFactory(hidden_units=[256, 256, 256]),
            critic_encoder_factory=VectorEncoderFactory(hidden_units=[256, 256, 256]),
            observation_scaler=scaler)
    elif name == "dt":
        config = d3rlpy.algos.DecisionTransformerConfig(
            batch_size=64, context_size=20, num_heads=1, num_layers=3, max_timestep=1000,
            learning_rate=1e-4, activation_type="relu",
            position_encoding_type=d3rlpy.PositionEncodingType.SIMPLE,
            encoder_factory=VectorEncoderFactory(hidden_units=[128],
                                                 exclude_last_activation=True),
            optim_factory=d3rlpy.optimizers.AdamWFactory(
                weight_decay=1e-4, clip_grad_norm=0.25,
                lr_scheduler_factory=d3rlpy.optimizers.WarmupSchedulerFactory(
                    warmup_steps=10_000)),
            observation_scaler=scaler, reward_scaler=MultiplyRewardScaler(0.001))
    else:
        raise SystemExit(f"d3rlpy_worker: unknown algo '{name}' (expected bc | cql | dt)")
    algo = config.create(device=device)
    # What `fit` does before its loop: fit the scalers, then build the networks.
    if name == "dt":
        build_scalers_with_trajectory_slicer(algo, dataset)
    else:
        build_scalers_with_transition_picker(algo, dataset)
    algo.build_with_dataset(dataset)
    if name == "dt":
        return algo, lambda: dataset.sample_trajectory_batch(config.batch_size,
                                                            length=config.context_size)
    return algo, lambda: dataset.sample_transition_batch(config.batch_size)


def send(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def main() -> None:
    # The protocol owns the real stdout; anything d3rlpy prints (structlog, tqdm) goes to
    # stderr instead of corrupting it.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="D4RL-layout HDF5 file")
    p.add_argument("--algo", required=True, choices=("bc", "cql", "dt"))
    p.add_argument("--device", default="cpu:0")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import d3rlpy

    d3rlpy.seed(args.seed)
    t0 = time.perf_counter()
    dataset = load_dataset(args.data)
    algo, sample = make_algo(args.algo, dataset, args.device)
    setup_s = time.perf_counter() - t0
    flops = count_flops(lambda: algo.update(sample()))
    modules = algo.impl.modules
    params = sum(p.numel() for f in dataclasses.fields(modules)
                 if isinstance(m := getattr(modules, f.name), torch.nn.Module)
                 for p in m.parameters())  # networks, target networks, scalars
    send(proto, {
        "ready": True, "flops_per_update": flops, "parameters": params, "setup_s": setup_s,
        "config": json.loads(algo.config.serialize()),
        "versions": {"d3rlpy": d3rlpy.__version__, "torch": torch.__version__},
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    })

    def run(msg: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        for _ in range(int(msg["updates"])):
            algo.update(sample())
        return {"seconds": time.perf_counter() - start}

    serve(proto, run, "d3rlpy_worker")


def serve(proto: TextIO, run: Callable[[dict[str, Any]], dict[str, Any]], name: str) -> None:
    """Answer "run" requests on stdin with `run(msg)` (at the request's torch thread count)
    until "quit" or the end of stdin."""
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        if msg["cmd"] != "run":
            raise SystemExit(f"{name}: unknown command {msg!r}")
        torch.set_num_threads(int(msg["threads"]))
        send(proto, run(msg))


if __name__ == "__main__":
    main()
