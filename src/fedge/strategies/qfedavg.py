"""q-FedAvg: Li, Sanjabi, Beirami, Smith, "Fair Resource Allocation in Federated
Learning", ICLR 2020 (Algorithm 2).

With ``L = 1 / lr``, ``F_k`` the client's loss at the global model and
``Δw_k = L (w - w̄_k)``: ``Δ_k = F_k^q Δw_k``,
``h_k = q F_k^(q-1) ||Δw_k||² + L F_k^q`` and ``w <- w - Σ Δ_k / Σ h_k``.
Larger ``q`` weights high-loss clients more (q = 0 recovers a FedAvg-like step).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np

from fedge.core.errors import ConfigError, ValidationError
from fedge.core.params import Params, l2_norm
from fedge.core.types import ClientContext, ClientUpdate, FitInstructions, Metrics, TrainConfig
from fedge.strategies.aggregate import Terms, scalar
from fedge.strategies.base import Strategy, StrategyState

INITIAL_LOSS = "initial_loss"


def qffl_terms(delta: list[np.ndarray], loss: float, q: float, lipschitz: float) -> tuple[list[np.ndarray], float]:
    """One client's ``(Δ_k, h_k)``; ``delta`` is local minus global."""
    dw = [-lipschitz * np.asarray(d, dtype=np.float64) for d in delta]
    fq = max(loss, 1e-10) ** q
    norm2 = l2_norm(dw) ** 2
    h = q * max(loss, 1e-10) ** (q - 1) * norm2 + lipschitz * fq
    return [fq * t for t in dw], float(h)


class QFedAvg(Strategy):
    name: ClassVar[str] = "qfedavg"

    def __init__(self, *, q: float = 1.0, lipschitz: float | None = None) -> None:
        super().__init__(server_lr=1.0, weighting="uniform")
        if q < 0:
            raise ConfigError(f"strategy.q must be >= 0, got {q}")
        self.q = float(q)
        self.lipschitz = lipschitz

    def configure(self, state: StrategyState, round_num: int, train: TrainConfig) -> FitInstructions:
        lip = self.lipschitz if self.lipschitz is not None else 1.0 / train.lr
        return FitInstructions(round_num=round_num, train=train, config={"report_initial_loss": True, "lipschitz": lip})

    def contribution(self, update: ClientUpdate) -> Terms:
        if INITIAL_LOSS not in update.metrics:
            raise ValidationError(f"client {update.client_id} sent no {INITIAL_LOSS} for q-FedAvg")
        lip = update.metrics.get("lipschitz")
        if lip is None:
            raise ValidationError(f"client {update.client_id} sent no lipschitz for q-FedAvg")
        big_delta, h = qffl_terms(update.delta, update.metrics[INITIAL_LOSS], self.q, lip)
        return {"Delta": big_delta, "h": scalar(h), "weight": scalar(1.0)}

    def aggregate(self, state: StrategyState, sums: Terms) -> tuple[StrategyState, Metrics]:
        h = float(sums["h"][0][0])
        x = [(p - (d / h)).astype(np.float32) for p, d in zip(state.params, sums["Delta"], strict=True)]
        return replace(state, params=x, round_num=state.round_num + 1), {}

    def client_finish(
        self,
        update: ClientUpdate,
        *,
        global_params: Params,
        local_params: Params,
        ins: FitInstructions,
        ctx: ClientContext,
        steps: int,
    ) -> ClientUpdate:
        update.metrics["lipschitz"] = float(ins.config["lipschitz"])
        return update
