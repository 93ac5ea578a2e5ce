"""The machine's dense matmul peak: large square matmuls in fp32 and bf16, best of several.

The yardstick for "achieved GFLOP/s" in the training benchmark: a training update cannot go
faster than its matmul FLOPs at this rate. Uses torch's current thread count (set it before
calling, or pass --threads).

    python benchmarks/matmul_peak.py [--size 2048] [--repeats 8] [--threads 0]
"""

from __future__ import annotations

import argparse
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 8,
                  device: str = "cpu") -> float:
    """Best GFLOP/s of `repeats` (size x size) @ (size x size) products in `dtype`."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=g, device=device).to(dtype)
    b = torch.randn(size, size, generator=g, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up: kernel selection, page faults
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        if device != "cpu":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def matmul_peak(size: int = 2048, repeats: int = 8, device: str = "cpu") -> dict[str, float]:
    """{"fp32": GFLOP/s, "bf16": GFLOP/s} at the current torch thread count."""
    return {name: matmul_gflops(dtype, size, repeats, device) for name, dtype in DTYPES.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak(args.size, args.repeats)
    print(f"matmul peak, {args.size}x{args.size}, {torch.get_num_threads()} thread(s): "
          + ", ".join(f"{k} {v:,.1f} GFLOP/s" for k, v in peak.items()))


if __name__ == "__main__":
    main()
