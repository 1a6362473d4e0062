"""Ditto: Li, Hu, Beirami and Smith, "Ditto: Fair and Robust Federated Learning Through
Personalization", ICML 2021 (Algorithm 1).

The global model is trained exactly as FedAvg trains it. Each selected client also
updates its personal model ``v_k`` on ``F_k(v) + λ/2 ||v - w^t||^2``, regularised toward
the global model ``w^t`` it received, and keeps ``v_k`` in its own state; only the global
update travels. The regulariser is applied as its proximal map after each SGD step
(``v <- (v + ηλ w^t) / (1 + ηλ)``, forward-backward splitting, which solves the same
objective and is stable for any λ): λ = 0 trains a purely local model, λ → ∞ pins
``v_k`` to the global model.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from fedge.core.errors import ConfigError
from fedge.core.params import Params
from fedge.core.types import ClientContext, EvalResult, FitInstructions, TrainConfig
from fedge.strategies.base import Strategy, Weighting, with_personal

if TYPE_CHECKING:
    from fedge.clients.base import Client, TrainResult

STATE_KEY = "ditto_v"


class Ditto(Strategy):
    name: ClassVar[str] = "ditto"
    personal: ClassVar[bool] = True
    config_section: ClassVar[str] = "personalization"

    def __init__(
        self,
        *,
        ditto_lambda: float = 0.1,
        personal_epochs: int = 0,
        server_lr: float = 1.0,
        weighting: Weighting = "examples",
    ) -> None:
        super().__init__(server_lr=server_lr, weighting=weighting)
        if math.isnan(ditto_lambda) or ditto_lambda < 0:
            raise ConfigError(f"personalization.ditto_lambda must be >= 0, got {ditto_lambda}")
        if personal_epochs < 0:
            raise ConfigError(f"personalization.personal_epochs must be >= 0, got {personal_epochs}")
        self.ditto_lambda = float(ditto_lambda)
        self.personal_epochs = int(personal_epochs)

    def client_train(
        self, client: Client, params: Params, cfg: TrainConfig, *, ins: FitInstructions, ctx: ClientContext
    ) -> TrainResult:
        result = client.train(params, cfg, ctx)
        v: Params = ctx.state.get(STATE_KEY) or params
        personal = replace(
            cfg,
            epochs=self.personal_epochs or cfg.epochs,
            prox_mu=0.0,
            grad_correction=None,
            anchor=params,
            anchor_lambda=self.ditto_lambda,
        )
        ctx.state[STATE_KEY] = client.train(v, personal, ctx).params
        return result

    def client_evaluate(self, client: Client, params: Params, ctx: ClientContext) -> EvalResult:
        return with_personal(client, params, ctx.state.get(STATE_KEY))
