"""Federated strategies, one module per paper, looked up by name for configs and the CLI.

Those of optional parts (robust aggregation, LoRA) join :data:`REGISTRY` when
:func:`lookup` first asks for one of their names (:mod:`fedge.plugins`).
"""

from __future__ import annotations

import difflib
from typing import Any

from fedge.core.errors import ConfigError
from fedge.strategies.aggregate import Accumulator, Terms, weighted_mean
from fedge.strategies.base import Strategy, StrategyState
from fedge.strategies.ditto import Ditto
from fedge.strategies.fedavg import FedAvg
from fedge.strategies.fedavgm import FedAvgM
from fedge.strategies.fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from fedge.strategies.fedper import FedPer
from fedge.strategies.fedprox import FedProx
from fedge.strategies.fedrep import FedRep
from fedge.strategies.finetune import FineTune
from fedge.strategies.heterofl import HeteroFL
from fedge.strategies.qfedavg import QFedAvg
from fedge.strategies.scaffold import Scaffold

REGISTRY: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        FedProx,
        FedAvgM,
        FedAdam,
        FedYogi,
        FedAdagrad,
        Scaffold,
        QFedAvg,
        FineTune,
        Ditto,
        FedPer,
        FedRep,
        HeteroFL,
    )
}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Make a strategy class available by its ``name`` to configs and the CLI."""
    REGISTRY[cls.name] = cls
    return cls


def lookup(name: str) -> type[Strategy] | None:
    """The strategy class called ``name``; one of an optional part (``median``, ``flexlora`` ...) imports that part."""
    if name not in REGISTRY:
        from fedge.plugins import registry

        registry.load_strategy(name)
    return REGISTRY.get(name)


def names() -> list[str]:
    """Every strategy name, those of optional parts not imported yet included."""
    from fedge.plugins import registry

    return sorted({*REGISTRY, *registry.names("strategies")})


def build_strategy(name: str, **kwargs: Any) -> Strategy:
    """Instantiate the strategy called ``name`` with its hyperparameters."""
    cls = lookup(name)
    if cls is None:
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown strategy {name!r}{hint}; valid: {', '.join(names())}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"strategy {name!r}: {exc}") from None


__all__ = [
    "REGISTRY",
    "Accumulator",
    "Ditto",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedOpt",
    "FedPer",
    "FedProx",
    "FedRep",
    "FedYogi",
    "FineTune",
    "HeteroFL",
    "QFedAvg",
    "Scaffold",
    "Strategy",
    "StrategyState",
    "Terms",
    "build_strategy",
    "lookup",
    "names",
    "register",
    "weighted_mean",
]
