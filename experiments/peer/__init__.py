"""The peer check's parts (`experiments/peer_check.py` is the entry point):

- `algos`: per-algorithm settings (offrl config, d3rlpy arguments, diagnostics);
- `d3rlpy_side`: export, d3rlpy training in its venv, scoring with offrl's evaluator;
- `offrl_side`: offrl runs from the study's folders (read only) or trained into --work;
- `report`: seed statistics, the JSON report and its markdown table.
"""
