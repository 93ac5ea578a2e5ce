"""Score a d3rlpy policy (from d3rlpy_train.py) with offrl's evaluator: the same envs, episode
seeds, quotas and normalized scores as an offrl run.

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


class D3rlpyPolicy:
    """offrl `Policy` over a d3rlpy TorchScript policy file (BC / CQL)."""

    def __init__(self, path: str | Path, num_envs: int, action_low: np.ndarray,
                 action_high: np.ndarray) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"d3rlpy policy '{path}' not found (d3rlpy_train.py "
                                    f"writes <out>/policy.pt)")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
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
