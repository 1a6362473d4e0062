"""FedRep: Collins, Hassani, Mokhtari and Shakkottai, "Exploiting Shared Representations
for Personalized Federated Learning", ICML 2021 (Algorithm 1).

As FedPer (a shared body, a personal head kept by each client, only the body's delta
sent), but local training alternates: first ``head_epochs`` epochs on the head with the
body frozen, then the round's ``epochs`` on the body with the new head frozen.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from fedge.core.errors import ConfigError
from fedge.core.params import Params
from fedge.core.types import ClientContext, FitInstructions, TrainConfig
from fedge.strategies.base import Weighting
from fedge.strategies.fedper import FedPer

if TYPE_CHECKING:
    from fedge.clients.base import Client, TrainResult


class FedRep(FedPer):
    name: ClassVar[str] = "fedrep"

    def __init__(
        self,
        *,
        head_tensors: int = 2,
        head_epochs: int = 5,
        server_lr: float = 1.0,
        weighting: Weighting = "examples",
    ) -> None:
        super().__init__(head_tensors=head_tensors, server_lr=server_lr, weighting=weighting)
        if head_epochs < 0:
            raise ConfigError(f"personalization.head_epochs must be >= 0, got {head_epochs}")
        self.head_epochs = int(head_epochs)

    def client_train(
        self, client: Client, params: Params, cfg: TrainConfig, *, ins: FitInstructions, ctx: ClientContext
    ) -> TrainResult:
        n = len(params)
        k = self.body(n)
        steps = 0
        if self.head_epochs:
            head = client.train(params, replace(cfg, epochs=self.head_epochs, frozen=tuple(range(k))), ctx)
            params, steps = head.params, head.steps
        body = client.train(params, replace(cfg, frozen=tuple(range(k, n))), ctx)
        return replace(body, steps=body.steps + steps)
