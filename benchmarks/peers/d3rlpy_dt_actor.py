"""Serve a trained d3rlpy 2.8.1 Decision Transformer to offrl's evaluator, acting through
d3rlpy's own `StatefulTransformerWrapper` (one per env).

Runs with `.venv-d3rlpy/bin/python` and imports nothing from offrl; the client is
`benchmarks/peers/d3rlpy_policy.py:D3rlpyDTPolicy` (offrl's `Policy` protocol), so the envs,
episode seeds and quotas are offrl's evaluator's while every action is d3rlpy's: the wrapper
keeps the last K observations, actions, rewards, returns-to-go (target minus the rewards so
far) and timesteps in deques and runs the whole window each step, as d3rlpy's own
`evaluate_transformer_with_environment` does. Messages, one JSON object per line:

    <- {"ready": true, "context": 20, "versions": {...}}              (on start)
    -> {"cmd": "reset", "mask": [true, false, ...], "target": 3600.0} <- {"ok": true}
    -> {"cmd": "act", "obs": [[...], ...], "reward": [0.0, ...]}       <- {"actions": [[...]]}
    -> {"cmd": "quit"}

    .venv-d3rlpy/bin/python benchmarks/peers/d3rlpy_dt_actor.py --model RUN/model.d3 --envs 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch


def main() -> None:
    proto = os.fdopen(os.dup(1), "w")  # the protocol owns stdout; d3rlpy's prints go to stderr
    os.dup2(2, 1)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="d3rlpy_train.py's model.d3")
    p.add_argument("--envs", type=int, required=True, help="number of envs (wrappers)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import d3rlpy

    torch.set_num_threads(args.threads)
    algo = d3rlpy.load_learnable(str(args.model), device="cpu:0")
    wrappers: list[Any] = [None] * args.envs

    def send(message: dict[str, Any]) -> None:
        proto.write(json.dumps(message) + "\n")
        proto.flush()

    send({"ready": True, "context": algo.config.context_size,
          "versions": {"d3rlpy": d3rlpy.__version__, "torch": torch.__version__}})
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        if msg["cmd"] == "reset":
            for i, flag in enumerate(msg["mask"]):
                if flag:  # a fresh wrapper: empty history, returns-to-go from the target
                    wrappers[i] = algo.as_stateful_wrapper(target_return=float(msg["target"]))
            send({"ok": True})
        elif msg["cmd"] == "act":
            if any(w is None for w in wrappers):
                raise SystemExit("d3rlpy_dt_actor: act before every env was reset")
            obs = np.asarray(msg["obs"], dtype=np.float32)  # (N, obs_dim)
            actions = [np.asarray(w.predict(o, float(r)), dtype=np.float64).tolist()
                       for w, o, r in zip(wrappers, obs, msg["reward"], strict=True)]
            send({"actions": actions})
        else:
            raise SystemExit(f"d3rlpy_dt_actor: unknown command {msg!r}")


if __name__ == "__main__":
    main()
