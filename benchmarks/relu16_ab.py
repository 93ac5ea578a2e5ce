"""CQL and DT training updates/s with `offrl.relu16`'s integer ReLU ops against torch's
`relu_` / `threshold_backward`, interleaved A/B in one process, plus a bit-identity check.

Both sides are the same algorithm (paper-size CQL critics 256x3 / the bench's DT) from the
same seed; only the two ReLU functions that `offrl.nn` and `offrl.fused_linear` call are
swapped between rounds ("torch" = torch's own ops). A round times `--updates` updates of
each side, the order reversing every round; reported: median updates/s per side and the
median per-round ratio int16/torch. The identity check runs `--check-updates` updates of each
side from the same seed one after the other and compares every parameter bit for bit.

    python -m benchmarks.relu16_ab [--algos cql dt] [--threads 2 1] [--precision bf16]
        [--rounds 9] [--updates 15] [--data PATH] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

import offrl.fused_linear as fused_linear
import offrl.nn as offrl_nn
from benchmarks.ab_common import add_data_args, flushed_denormals, load_data, write_results
from offrl.algorithms import ALGORITHMS
from offrl.relu16 import relu_, relu_backward
from offrl.trainer import autocast_context

SIDES: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
    "int16": (relu_, relu_backward),
    "torch": (lambda x: x.relu_(), lambda g, y: torch.ops.aten.threshold_backward(g, y, 0)),
}


@contextlib.contextmanager
def side(name: str, precision: str) -> Iterator[None]:
    fwd, bwd = SIDES[name]
    saved = offrl_nn.relu_, offrl_nn.relu_backward, fused_linear.relu_backward
    offrl_nn.relu_, offrl_nn.relu_backward, fused_linear.relu_backward = fwd, bwd, bwd
    try:
        with autocast_context(torch.device("cpu"), precision):
            yield
    finally:
        offrl_nn.relu_, offrl_nn.relu_backward, fused_linear.relu_backward = saved


def build(algo: str, dataset: Any) -> tuple[Any, Any]:
    cls = ALGORITHMS[algo]
    torch.manual_seed(0)
    a = cls.from_dataset(cls.Config(), dataset, "cpu")
    return a, a.make_sampler(dataset, 0)


def bit_identical(algo: str, dataset: Any, precision: str, updates: int) -> bool:
    params = {}
    for name in SIDES:
        a, sampler = build(algo, dataset)
        with side(name, precision):
            for _ in range(updates):
                a.update(sampler.sample())
        params[name] = [p.detach().clone() for p in a.nets.parameters()]
    return all(torch.equal(x, y) for x, y in zip(*params.values(), strict=True))


def run(algo: str, dataset: Any, threads: int, precision: str, rounds: int, updates: int,
        check_updates: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    sides = {name: build(algo, dataset) for name in SIDES}
    for name, (a, sampler) in sides.items():  # warm-up: allocator, first optimizer step
        with side(name, precision):
            for _ in range(3):
                a.update(sampler.sample())
    rates: dict[str, list[float]] = {name: [] for name in SIDES}
    names = list(SIDES)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            a, sampler = sides[name]
            with side(name, precision):
                t0 = time.perf_counter()
                for _ in range(updates):
                    a.update(sampler.sample())
                rates[name].append(updates / (time.perf_counter() - t0))
    return {"algo": algo, "threads": threads, "precision": precision, "rounds": rounds,
            "updates_per_round": updates,
            "updates_per_s": {k: statistics.median(v) for k, v in rates.items()},
            "ratio_int16_to_torch": statistics.median(
                x / y for x, y in zip(rates["int16"], rates["torch"], strict=True)),
            "bit_identical_after": check_updates,
            "bit_identical": bit_identical(algo, dataset, precision, check_updates),
            "rates": rates}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algos", nargs="+", choices=["cql", "dt"], default=["cql", "dt"])
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--updates", type=int, default=15)
    p.add_argument("--check-updates", type=int, default=20)
    add_data_args(p)
    args = p.parse_args(argv)
    for name in ("rounds", "updates", "check_updates"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.threads) < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    dataset = load_data(args.data)
    results = []
    with flushed_denormals():
        for algo in args.algos:
            for threads in args.threads:
                r = run(algo, dataset, threads, args.precision, args.rounds, args.updates,
                        args.check_updates)
                results.append(r)
                rates = ", ".join(f"{k} {v:.2f}" for k, v in r["updates_per_s"].items())
                print(f"{algo} {threads} thread(s) {args.precision}: {rates} updates/s, "
                      f"int16/torch {r['ratio_int16_to_torch']:.3f}, bit-identical "
                      f"{r['bit_identical']}", flush=True)
    write_results(args.out, "relu16_ab", args.data, results)


if __name__ == "__main__":
    main()
