"""Score a d3rlpy policy (from d3rlpy_train.py) with offrl's evaluator: the same envs, episode
seeds, quotas and normalized scores as an offrl run.

`D3rlpyDTPolicy` does the same for a d3rlpy Decision Transformer, through d3rlpy's stateful
wrapper in the d3rlpy venv (`d3rlpy_dt_actor.py`).

`D3rlpyPolicy` implements offrl's `Policy` protocol over d3rlpy's TorchScript export
(`save_policy`): observation in env units (the export applies d3rlpy's observation scaler),
greedy action out. It is stateless and batched over the N envs; targets and rewards are
ignored (BC and CQL are not return-conditioned).

    python -m benchmarks.peers.d3rlpy_policy RUN_DIR --env-id Hopper-v5 [--episodes 10]
        [--envs 10] [--seed 1000000]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from offrl.envs import env_spaces
from offrl.evaluator import Evaluator, reference_scores


def _checked(path: str | Path, num_envs: int, what: str, name: str) -> Path:
    """`path` as a Path, after checking that it exists and that num_envs >= 1."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"d3rlpy {what} '{path}' not found (d3rlpy_train.py writes "
                                f"<out>/{name})")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    return path


class D3rlpyPolicy:
    """offrl `Policy` over a d3rlpy TorchScript policy file (BC / CQL)."""

    def __init__(self, path: str | Path, num_envs: int, action_low: np.ndarray,
                 action_high: np.ndarray) -> None:
        path = _checked(path, num_envs, "policy", "policy.pt")
        with warnings.catch_warnings():  # TorchScript is deprecated in torch; d3rlpy exports it
            warnings.simplefilter("ignore", DeprecationWarning)
            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        self.num_envs = num_envs
        self.low = np.asarray(action_low, np.float32)
        self.high = np.asarray(action_high, np.float32)

    def reset(self, env_mask: np.ndarray, target_return: float | None = None) -> None:
        mask = np.asarray(env_mask)
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
            raise ValueError(f"reset: env_mask must be a ({self.num_envs},) bool array, got "
                             f"shape {mask.shape} dtype {mask.dtype}")

    @torch.no_grad()
    def act(self, obs: np.ndarray, last_reward: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, np.float32))  # (N, obs_dim)
        if x.shape[0] != self.num_envs:
            raise ValueError(f"act: expected {self.num_envs} observations, got {x.shape[0]}")
        action = self.module(x).numpy()  # (N, A) env units
        return np.clip(action, self.low, self.high).astype(np.float32)


class D3rlpyDTPolicy:
    """offrl `Policy` over a trained d3rlpy Decision Transformer (d3rlpy_train.py's model.d3),
    acting through d3rlpy's `StatefulTransformerWrapper` in a `d3rlpy_dt_actor.py` process
    (d3rlpy lives in its own venv). Return-conditioned: `reset` passes the target; the
    wrapper subtracts every reward it is given. Close it (or use it as a context manager)."""

    def __init__(self, model: str | Path, num_envs: int, action_low: np.ndarray,
                 action_high: np.ndarray, python: str | Path, threads: int = 1) -> None:
        import subprocess

        model = _checked(model, num_envs, "model", "model.d3")
        self.num_envs = num_envs
        self.low = np.asarray(action_low, np.float32)
        self.high = np.asarray(action_high, np.float32)
        script = Path(__file__).resolve().with_name("d3rlpy_dt_actor.py")
        self.log_path = model.with_name("dt_actor.log")  # d3rlpy's output and any traceback
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [str(python), str(script), "--model", str(model), "--envs", str(num_envs),
                 "--threads", str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True)
        self.info = self._call(None)

    def _call(self, message: dict | None) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if message is not None:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log_path.read_text()[-2000:]
            raise RuntimeError(f"d3rlpy_dt_actor exited ({self.proc.wait()}); "
                               f"{self.log_path}:\n{tail}")
        return json.loads(line)

    def reset(self, env_mask: np.ndarray, target_return: float | None = None) -> None:
        mask = np.asarray(env_mask)
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
            raise ValueError(f"reset: env_mask must be a ({self.num_envs},) bool array, got "
                             f"shape {mask.shape} dtype {mask.dtype}")
        if target_return is None:
            raise ValueError("D3rlpyDTPolicy needs a target return (evaluate with targets)")
        self._call({"cmd": "reset", "mask": mask.tolist(), "target": float(target_return)})

    def act(self, obs: np.ndarray, last_reward: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float64)  # (N, obs_dim); float64 survives JSON exactly
        if obs.shape[0] != self.num_envs:
            raise ValueError(f"act: expected {self.num_envs} observations, got {obs.shape[0]}")
        reply = self._call({"cmd": "act", "obs": obs.tolist(),
                            "reward": np.asarray(last_reward, np.float64).tolist()})
        return np.clip(np.asarray(reply["actions"], np.float32), self.low, self.high)

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)

    def __enter__(self) -> D3rlpyDTPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="d3rlpy_train.py --out folder")
    p.add_argument("--env-id", required=True)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--envs", type=int, default=10)
    p.add_argument("--seed", type=int, default=1_000_000,
                   help="episode j resets with seed + j (offrl's default for seed-0 runs)")
    args = p.parse_args()
    torch.set_num_threads(1)
    _, act_space = env_spaces(args.env_id)
    n = min(args.envs, args.episodes)
    policy = D3rlpyPolicy(args.run_dir / "policy.pt", n, act_space.low, act_space.high)
    with Evaluator(args.env_id, n, ref_scores=reference_scores(args.env_id)) as ev:
        (res,) = ev.evaluate(policy, args.episodes, seed=args.seed)
    summary = {"env_id": args.env_id, "episodes": args.episodes, "seed": args.seed,
               **res.summary()}
    (args.run_dir / "offrl_eval.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
