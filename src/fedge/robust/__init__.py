"""Byzantine robustness: robust aggregation rules, robust strategies and attack simulation.

Importing this package registers the strategies ``median``, ``trimmed-mean``, ``krum``,
``multi-krum``, ``bulyan``, ``norm-bound`` and ``centered-clip``, and the config
sections ``[robust]`` and ``[attack]``. See ``docs/robustness.md``.
"""

from fedge.robust import aggregators
from fedge.robust.attacks import ATTACKS, Attack, AttackClient, malicious_ids
from fedge.robust.config import AttackConfig, RobustConfig, build_attack
from fedge.robust.strategies import (
    ROBUST_STRATEGIES,
    Bulyan,
    CenteredClip,
    Krum,
    Median,
    MultiKrum,
    NormBound,
    RobustStrategy,
    TrimmedMean,
)

__all__ = [
    "ATTACKS",
    "ROBUST_STRATEGIES",
    "Attack",
    "AttackClient",
    "AttackConfig",
    "Bulyan",
    "CenteredClip",
    "Krum",
    "Median",
    "MultiKrum",
    "NormBound",
    "RobustConfig",
    "RobustStrategy",
    "TrimmedMean",
    "aggregators",
    "build_attack",
    "malicious_ids",
]
