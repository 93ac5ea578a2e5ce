"""Peer check (issue #6): train d3rlpy on an offrl dataset and score it with offrl's evaluator.

- `export_d4rl.py`: any offrl dataset -> D4RL-layout HDF5 (what d3rlpy reads);
- `d3rlpy_config.py`: offrl CQL / DT configs -> d3rlpy arguments (pure Python), and what
  still differs;
- `d3rlpy_train.py` (d3rlpy venv): d3rlpy's `fit`, then policy.pt / model.d3 / peer.json;
- `d3rlpy_policy.py`: offrl `Policy` adapters (TorchScript BC / CQL; DT through
  `d3rlpy_dt_actor.py`, d3rlpy's stateful wrapper in the d3rlpy venv);
- `cql_speed.py`: d3rlpy vs offrl CQL updates/s, paired chunks.

    python -m benchmarks.peers.export_d4rl SOURCE data.hdf5 [--env-id Hopper-v5]
    .venv-d3rlpy/bin/python benchmarks/peers/d3rlpy_train.py --data data.hdf5 --algo cql \\
        --steps 100000 --out runs/peers/cql-0
    python -m benchmarks.peers.d3rlpy_policy runs/peers/cql-0 --env-id Hopper-v5

The whole comparison (export, training, scoring, report) is experiments/peer_check.py.
"""
