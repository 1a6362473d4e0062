"""Client sampling: how many clients a round selects, and which."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedge.core.errors import ConfigError

if TYPE_CHECKING:
    from fedge.config.schema import TrainingConfig


@dataclass(frozen=True)
class Sampling:
    """Select ``count`` clients, or ``fraction`` of those available, but at least ``minimum``.

    Selection is uniform without replacement from the available ids, using the round's
    generator, so a seed fixes it.
    """

    count: int | None = 10
    fraction: float | None = None
    minimum: int = 1

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise ConfigError(f"clients_per_round must be >= 1, got {self.count}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.minimum < 1:
            raise ConfigError(f"min_clients must be >= 1, got {self.minimum}")

    def how_many(self, available: int) -> int:
        k = self.count if self.count is not None else math.ceil((self.fraction or 1.0) * available)
        return min(available, max(k, self.minimum))

    def sample(self, available: Sequence[int], rng: np.random.Generator) -> list[int]:
        k = self.how_many(len(available))
        ids = np.asarray(sorted(available), dtype=np.int64)
        return sorted(int(i) for i in rng.choice(ids, size=k, replace=False))


def training_sampling(t: TrainingConfig) -> Sampling:
    """The sampling that ``[training]`` describes: ``clients_per_round``, else ``fraction``, at least ``min_clients``.

    The one place a config becomes a cohort size: the round loop, secure aggregation's
    fixed-point range, the attack simulation and the privacy accountant all read it from here.
    """
    if not t.clients_per_round and not t.fraction:
        raise ConfigError("training: set clients_per_round or fraction")
    return Sampling(
        count=t.clients_per_round or None,
        fraction=t.fraction if not t.clients_per_round else None,
        minimum=t.min_clients,
    )


def cohort_size(t: TrainingConfig, population: int) -> int:
    """How many of ``population`` clients a round of ``[training]`` ``t`` selects."""
    return training_sampling(t).how_many(population)
