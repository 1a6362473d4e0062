"""FedProx: Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020.

Clients minimise ``F_k(w) + mu/2 * ||w - w_t||^2``; the server averages as FedAvg does.
Partial work from stragglers (fewer local epochs) is kept, not dropped.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from fedge.core.errors import ConfigError
from fedge.core.types import FitInstructions, TrainConfig
from fedge.strategies.base import Strategy, StrategyState, Weighting


class FedProx(Strategy):
    name: ClassVar[str] = "fedprox"

    def __init__(self, *, mu: float = 0.01, server_lr: float = 1.0, weighting: Weighting = "examples") -> None:
        super().__init__(server_lr=server_lr, weighting=weighting)
        if mu < 0:
            raise ConfigError(f"strategy.mu must be >= 0, got {mu}")
        self.mu = float(mu)

    def configure(self, state: StrategyState, round_num: int, train: TrainConfig) -> FitInstructions:
        return FitInstructions(round_num=round_num, train=replace(train, prox_mu=self.mu))
