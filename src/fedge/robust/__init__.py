"""Byzantine robustness: robust aggregation rules, robust strategies and attack simulation.

Its :data:`HOOKS` give :mod:`fedge.plugins` the strategies ``median``, ``trimmed-mean``,
``krum``, ``multi-krum``, ``bulyan``, ``norm-bound`` and ``centered-clip``, the config
sections ``[robust]`` and ``[attack]``, the attack's client wrapper and round labels, and
the check that refuses what a robust strategy cannot honour. See ``docs/robustness.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedge.config.schema import Experiment
from fedge.plugins import Hooks
from fedge.robust import aggregators
from fedge.robust.attacks import ATTACKS, Attack, AttackClient, malicious_ids
from fedge.robust.config import (
    AttackConfig,
    RobustConfig,
    attack_callbacks,
    attack_clients,
    build_attack,
    check_robust,
)
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

if TYPE_CHECKING:
    from fedge.federation import BuildContext


def validate(exp: Experiment, ctx: BuildContext) -> None:
    """Refuse, in one line, a combination a robust strategy cannot honour (secure aggregation, too few clients)."""
    check_robust(exp, ctx)


HOOKS = Hooks(
    sections={"robust": RobustConfig, "attack": AttackConfig},
    strategies=ROBUST_STRATEGIES,
    callbacks=[attack_callbacks],
    client_wrappers=[attack_clients],
    validate=validate,
)

__all__ = [
    "ATTACKS",
    "HOOKS",
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
