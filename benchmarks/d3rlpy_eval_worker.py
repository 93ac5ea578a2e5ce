"""The d3rlpy 2.8.1 side of the evaluation benchmark: sequential DT evaluation, one env at a
time, as d3rlpy's own acting loop does it.

Runs with `.venv-d3rlpy/bin/python` (it needs gymnasium's MuJoCo envs there: `make
venv-d3rlpy` installs `gymnasium[mujoco]==1.0.0`) and imports nothing from offrl. It builds
the benchmark's DT (`d3rlpy_worker.make_algo("dt", ...)`: K=20, 128-dim, 3 layers, 1 head,
the same architecture as offrl's) on a small D4RL-layout HDF5 file, untrained (speed does
not depend on the weights), then serves requests on stdin so that eval_speed.py can
interleave its timed chunks with offrl's:

    -> {"cmd": "run", "seeds": [100, 101], "threads": 1}
    <- {"seconds": 3.2, "steps": 2000, "returns": [...]}
    -> {"cmd": "quit"}

One episode: `env.reset(seed=s)`, then `StatefulTransformerWrapper.predict(obs, reward)`
per step (d3rlpy's stateful acting: it keeps the last K observations, actions, rewards and
returns-to-go in deques and runs the whole window through the transformer every step) and
`env.step`, until the episode ends. `--no-terminate` makes Hopper run all 1000 steps, as
eval_speed.py's default does on the offrl side.

    .venv-d3rlpy/bin/python benchmarks/d3rlpy_eval_worker.py --data FILE.hdf5 --target 3600
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # d3rlpy_worker, as a plain script
from d3rlpy_worker import load_dataset, make_algo, send, serve  # noqa: E402


def main() -> None:
    proto = os.fdopen(os.dup(1), "w")  # the protocol owns stdout; d3rlpy's prints go to stderr
    os.dup2(2, 1)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="D4RL-layout HDF5 file")
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--target", type=float, default=3600.0, help="target return")
    p.add_argument("--terminate", action="store_true", help="standard env (early falls)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import d3rlpy
    import gymnasium as gym

    d3rlpy.seed(args.seed)
    algo, _ = make_algo("dt", load_dataset(args.data), "cpu:0")
    kwargs = {} if args.terminate else {"terminate_when_unhealthy": False}
    env = gym.make(args.env, **kwargs)
    actor = algo.as_stateful_wrapper(target_return=args.target)
    send(proto, {"ready": True, "versions": {"d3rlpy": d3rlpy.__version__,
                                             "gymnasium": gym.__version__,
                                             "torch": torch.__version__}})

    def run(msg: dict) -> dict:
        returns, steps = [], 0
        start = time.perf_counter()
        for seed in msg["seeds"]:
            obs, _ = env.reset(seed=int(seed))
            actor.reset()
            reward, total, done = 0.0, 0.0, False
            while not done:
                action = actor.predict(np.asarray(obs, np.float32), reward)
                obs, reward, term, trunc, _ = env.step(action)
                reward = float(reward)
                total += reward
                steps += 1
                done = term or trunc
            returns.append(total)
        return {"seconds": time.perf_counter() - start, "steps": steps, "returns": returns}

    serve(proto, run, "d3rlpy_eval_worker")
    env.close()


if __name__ == "__main__":
    main()
