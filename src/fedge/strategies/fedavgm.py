"""FedAvgM: Hsu et al., "Measuring the Effects of Non-Identical Data Distribution for
Federated Visual Classification", 2019 — FedAvg with server momentum.

With the mean client delta ``d_t``: ``v_t = beta * v_{t-1} + d_t`` and
``w_{t+1} = w_t + server_lr * v_t``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np

from fedge.core.errors import ConfigError
from fedge.core.params import Params, zeros_like
from fedge.core.types import Metrics
from fedge.strategies.aggregate import Terms, apply_step
from fedge.strategies.base import Strategy, StrategyState, Weighting


def momentum_step(velocity: Params, mean_delta: Params, beta: float) -> Params:
    """``beta * v + d`` tensor by tensor."""
    b = np.float32(beta)
    return [(b * v + d).astype(np.float32) for v, d in zip(velocity, mean_delta, strict=True)]


class FedAvgM(Strategy):
    name: ClassVar[str] = "fedavgm"

    def __init__(self, *, momentum: float = 0.9, server_lr: float = 1.0, weighting: Weighting = "examples") -> None:
        super().__init__(server_lr=server_lr, weighting=weighting)
        if not 0 <= momentum < 1:
            raise ConfigError(f"strategy.momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)

    def init(self, params: Params, *, num_clients: int) -> StrategyState:
        state = super().init(params, num_clients=num_clients)
        state.slots["velocity"] = zeros_like(params)
        return state

    def aggregate(self, state: StrategyState, sums: Terms) -> tuple[StrategyState, Metrics]:
        v = momentum_step(state.slots["velocity"], self.mean_delta(sums), self.momentum)
        return replace(
            state,
            params=apply_step(state.params, v, self.server_lr),
            slots={**state.slots, "velocity": v},
            round_num=state.round_num + 1,
        ), {}
