"""Trajectory dataset layer: loaders -> `EpisodeDataset` -> samplers."""

from offrl.datasets.core import DatasetError, DatasetMeta, EpisodeDataset, returns_to_go
from offrl.datasets.loading import SOURCE_HELP, load_dataset
from offrl.datasets.normalizer import Normalizer
from offrl.datasets.samplers import SequenceSampler, StateActionSampler, TransitionSampler

__all__ = [
    "SOURCE_HELP",
    "DatasetError",
    "DatasetMeta",
    "EpisodeDataset",
    "Normalizer",
    "SequenceSampler",
    "StateActionSampler",
    "TransitionSampler",
    "load_dataset",
    "returns_to_go",
]
