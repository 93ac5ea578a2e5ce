"""CQL training updates/s with each CPU path of `CriticEnsemble` (`cpu_path`), interleaved
A/B in one process (robust to a busy machine: every side sees the same load swings).

- members: row chunks, one ensemble member at a time (2-D matmuls);
- batched: row chunks, all members in each op (batched matmuls, split by member across
  threads);
- layerwise: plain autograd, layer by layer over all rows.

Every side is the same `CQL` (paper-size twin critics and actor, 256x3, batch 256, 10
sampled actions) from the same seed, on the same batches. A round times `--updates` updates
of each side, the order reversing every round; reported: the median updates/s per side and
the median over rounds of each side's ratio to `layerwise`.

    python -m benchmarks.cql_path_ab [--threads 2 1] [--precisions bf16 fp32] [--rounds 9]
        [--updates 20] [--data PATH] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Any

import torch

from benchmarks.ab_common import add_data_args, flushed_denormals, load_data, write_results
from offrl.algorithms.cql import CQL, CQLConfig

PATHS = ("layerwise", "members", "batched")


def run(dataset: Any, threads: int, precision: str, rounds: int, updates: int
        ) -> dict[str, Any]:
    torch.set_num_threads(threads)
    sides = {}
    for path in PATHS:
        torch.manual_seed(0)
        algo = CQL.from_dataset(CQLConfig(), dataset, "cpu")
        algo.critic.cpu_path = algo.critic_target.cpu_path = path
        sides[path] = (algo, algo.make_sampler(dataset, 0))

    def numerics() -> contextlib.AbstractContextManager:
        if precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    for algo, sampler in sides.values():  # warm-up: allocator, first optimizer step
        with numerics():
            for _ in range(5):
                algo.update(sampler.sample())
    rates: dict[str, list[float]] = {p: [] for p in PATHS}
    for r in range(rounds):
        for path in (PATHS if r % 2 == 0 else PATHS[::-1]):
            algo, sampler = sides[path]
            with numerics():
                t0 = time.perf_counter()
                for _ in range(updates):
                    algo.update(sampler.sample())
            rates[path].append(updates / (time.perf_counter() - t0))
    return {"threads": threads, "precision": precision, "rounds": rounds,
            "updates_per_round": updates,
            "updates_per_s": {p: statistics.median(v) for p, v in rates.items()},
            "ratio_to_layerwise": {p: statistics.median(
                x / y for x, y in zip(v, rates["layerwise"], strict=True))
                for p, v in rates.items()},
            "rates": rates}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--precisions", nargs="+", choices=["bf16", "fp32"],
                   default=["bf16", "fp32"])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--updates", type=int, default=20)
    add_data_args(p)
    args = p.parse_args(argv)
    dataset = load_data(args.data)
    results = []
    with flushed_denormals():
        for threads in args.threads:
            for precision in args.precisions:
                r = run(dataset, threads, precision, args.rounds, args.updates)
                results.append(r)
                rates = ", ".join(f"{k} {v:.1f}" for k, v in r["updates_per_s"].items())
                print(f"{threads} thread(s) {precision}: {rates} updates/s", flush=True)
    write_results(args.out, "cql_path_ab", args.data, results)


if __name__ == "__main__":
    main()
