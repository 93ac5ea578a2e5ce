"""Updates/s of the peer check's CQL, d3rlpy (fp32) beside offrl (fp32 and bf16), 1 thread:
what the full 10k-step peer runs will cost. Uses the training benchmark's paired chunks
(`benchmarks/train_speed.py`: each offrl chunk is followed by a d3rlpy chunk of the same size,
so load swings hit both; the ratio is the median of the per-pair ratios). The d3rlpy worker's
CQL has the peer check's networks and sample counts (its conservative threshold differs,
which costs nothing).

    .venv/bin/python -m benchmarks.peers.cql_speed \\
        --data runs/peers/hopper/hopper-medium-replay.hdf5 --updates 50 --repeats 4 \\
        --out runs/peer-check-dev/cql_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.train_speed import WORKLOADS, D3rlpyWorker, measure, precision_option


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="D4RL-layout HDF5 (export_d4rl)")
    p.add_argument("--updates", type=int, default=50, help="updates per chunk")
    p.add_argument("--repeats", type=int, default=4, help="chunk pairs per precision")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                   choices=("fp32", "bf16"), help="offrl precisions (d3rlpy: always fp32)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    import torch

    torch.manual_seed(0)
    load_before = os.getloadavg()
    results = []
    for precision in args.precisions:
        peer = D3rlpyWorker(args.data, "cql", log_dir=args.out.parent)
        try:
            res = measure(WORKLOADS["cql"], args.data, 1, updates=args.updates,
                          repeats=args.repeats, precision=precision_option(
                              f"precision={precision}"), peer=peer)
        finally:
            peer.close()
        res["load_avg_after"] = os.getloadavg()
        results.append(res)
        print(f"offrl {precision}: {res['offrl']['updates_per_s']:.2f} updates/s, d3rlpy fp32: "
              f"{res['d3rlpy']['updates_per_s']:.2f} updates/s; d3rlpy seconds / offrl seconds "
              f"per pair (median) {res['ratio']:.2f} (load {res['load_avg_after'][0]:.1f})",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_avg_before": load_before, "results": results}, indent=1)
                        + "\n")


if __name__ == "__main__":
    main()
