"""BC training updates/s with and without this session's two BC levers, interleaved A/B in one
process (robust to a busy machine: both sides see the same load swings).

- lean: `BC` as it is: `offrl.optim.AdamW` (fused kernel without torch's per-step Python
  bookkeeping) and prepared batches (the sampler applies the observation normalizer and the
  action scaling once to the whole dataset).
- torch: the same `BC` with `torch.optim.AdamW(fused=True)` and a plain `StateActionSampler`
  (raw batches normalized and scaled in every update): the code before the levers.

Both sides start from the same weights and draw the same batches from the same seed, so their
parameters must stay bit-identical (checked at the end). A round times `--updates` updates of
each side, the order alternating; reported: the median over rounds of per-round ratios
lean/torch and the median updates/s per side.

    python -m benchmarks.bc_update_ab [--threads 1 2] [--rounds 9] [--updates 300]
        [--data PATH] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from benchmarks.ab_common import add_data_args, load_data, write_results
from offrl.algorithms.bc import BC, BCConfig
from offrl.datasets import StateActionSampler


def build(dataset: Any, lean: bool) -> tuple[BC, Any]:
    torch.manual_seed(0)
    algo = BC.from_dataset(BCConfig(), dataset, "cpu")
    if lean:
        return algo, algo.make_sampler(dataset, 0)
    old = algo.optimizers["policy"]
    algo.optimizers["policy"] = torch.optim.AdamW(old.param_groups, fused=True)
    return algo, StateActionSampler(dataset, algo.config.batch_size, 0, "cpu")


def run(dataset: Any, threads: int, rounds: int, updates: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    sides = {"lean": build(dataset, True), "torch": build(dataset, False)}
    assert sides["lean"][1].prepared and not sides["torch"][1].prepared
    for algo, sampler in sides.values():  # warm-up: allocator, first (torch) optimizer step
        for _ in range(50):
            algo.update(sampler.sample())
    rates: dict[str, list[float]] = {"lean": [], "torch": []}
    for r in range(rounds):
        for name in (("lean", "torch") if r % 2 == 0 else ("torch", "lean")):
            algo, sampler = sides[name]
            t0 = time.perf_counter()
            for _ in range(updates):
                algo.update(sampler.sample())
            rates[name].append(updates / (time.perf_counter() - t0))
    a, b = (sides[n][0].policy_net.state_dict() for n in ("lean", "torch"))
    identical = all(torch.equal(a[k], b[k]) for k in a)
    return {"threads": threads, "rounds": rounds, "updates_per_round": updates,
            "ratio_lean_over_torch": statistics.median(
                x / y for x, y in zip(rates["lean"], rates["torch"], strict=True)),
            "lean_updates_per_s": statistics.median(rates["lean"]),
            "torch_updates_per_s": statistics.median(rates["torch"]),
            "parameters_bit_identical": identical, "rates": rates}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--updates", type=int, default=300)
    add_data_args(p)
    args = p.parse_args(argv)
    dataset = load_data(args.data)
    results = [run(dataset, t, args.rounds, args.updates) for t in args.threads]
    for r in results:
        print(f"{r['threads']} thread(s): lean {r['lean_updates_per_s']:.0f} vs torch "
              f"{r['torch_updates_per_s']:.0f} updates/s, ratio {r['ratio_lean_over_torch']:.3f}"
              f", bit-identical: {r['parameters_bit_identical']}")
    write_results(args.out, "bc_update_ab", args.data, results)


if __name__ == "__main__":
    main()
