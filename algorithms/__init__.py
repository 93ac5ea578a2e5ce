"""Offline RL algorithms behind one interface (`offrl.algorithm.Algorithm`).

`ALGORITHMS` maps the CLI name to the class; each class carries its `Config` dataclass and
is built with `X.from_dataset(config, dataset, device)` or `X.from_state_dict(state)`.
"""

from offrl.algorithms.base import OfflineAlgorithm, SpaceSpec
from offrl.algorithms.bc import BC, BCConfig, PercentBC, PercentBCConfig
from offrl.algorithms.cql import CQL, ContinuousCQL, CQLConfig
from offrl.algorithms.cql_discrete import DiscreteCQL
from offrl.algorithms.dt import DT, DecisionTransformer, DTConfig, DTPolicy

ALGORITHMS: dict[str, type[OfflineAlgorithm]] = {"dt": DT, "cql": CQL, "bc": BC, "pbc": PercentBC}

__all__ = [
    "ALGORITHMS",
    "BC",
    "CQL",
    "DT",
    "BCConfig",
    "CQLConfig",
    "ContinuousCQL",
    "DTConfig",
    "DTPolicy",
    "DecisionTransformer",
    "DiscreteCQL",
    "OfflineAlgorithm",
    "PercentBC",
    "PercentBCConfig",
    "SpaceSpec",
]
