"""offrl: offline reinforcement learning on one trainer and one evaluator."""

__version__ = "0.1.0"
