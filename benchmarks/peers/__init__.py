"""Peer check (issue #6): train d3rlpy on an offrl dataset and score it with offrl's evaluator.

    python -m benchmarks.peers.export_d4rl SOURCE data.hdf5 [--env-id Hopper-v5]
    .venv-d3rlpy/bin/python benchmarks/peers/d3rlpy_train.py --data data.hdf5 --algo cql \\
        --steps 100000 --out runs/peers/cql-0
    python -m benchmarks.peers.d3rlpy_policy runs/peers/cql-0 --env-id Hopper-v5
"""
