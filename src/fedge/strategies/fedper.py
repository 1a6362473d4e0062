"""FedPer: Arivazhagan, Aggarwal, Singh and Choudhary, "Federated Learning with
Personalization Layers", arXiv:1912.00818, 2019.

The model is a shared body and a personal head (its last ``head_tensors`` parameter
tensors, by default the final layer's weight and bias). Each client trains body and head
together, keeps the head in its own state and sends only the body's delta: the head
tensors of its update are empty, so the uplink bytes count the body alone. The server
averages the body as FedAvg does; its copy of the head stays the initial one, the head a
client starts from the first time it takes part.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fedge.core.errors import ConfigError
from fedge.core.params import Params, ParamSpec
from fedge.core.types import ClientContext, ClientUpdate, EvalResult, FitInstructions, Metrics
from fedge.strategies.aggregate import apply_step
from fedge.strategies.base import Strategy, StrategyState, Weighting, with_personal

if TYPE_CHECKING:
    from fedge.clients.base import Client

STATE_KEY = "personal_head"


class FedPer(Strategy):
    name: ClassVar[str] = "fedper"
    personal: ClassVar[bool] = True
    per_client_models: ClassVar[bool] = True
    partial_updates: ClassVar[bool] = True
    config_section: ClassVar[str] = "personalization"

    def __init__(self, *, head_tensors: int = 2, server_lr: float = 1.0, weighting: Weighting = "examples") -> None:
        super().__init__(server_lr=server_lr, weighting=weighting)
        if head_tensors < 1:
            raise ConfigError(f"personalization.head_tensors must be >= 1, got {head_tensors}")
        self.head_tensors = int(head_tensors)

    def body(self, n: int) -> int:
        """How many of ``n`` parameter tensors are shared (the rest are the personal head)."""
        if self.head_tensors >= n:
            raise ConfigError(
                f"personalization.head_tensors = {self.head_tensors} leaves no shared body in a model of {n} tensors"
            )
        return n - self.head_tensors

    def update_spec(self, spec: ParamSpec, client_id: int) -> ParamSpec:
        k = self.body(len(spec.shapes))
        return ParamSpec(tuple(s if i < k else (0,) for i, s in enumerate(spec.shapes)))

    def downlink_spec(self, spec: ParamSpec, client_id: int) -> ParamSpec:
        """The body alone: the head a client trains is its own, or the initial one it can build itself."""
        return self.update_spec(spec, client_id)

    def aggregate(self, state: StrategyState, sums: dict[str, list[np.ndarray]]) -> tuple[StrategyState, Metrics]:
        k = self.body(len(state.params))
        mean = self.mean_delta(sums)
        body = apply_step(state.params[:k], mean[:k], self.server_lr)
        params = body + [p.copy() for p in state.params[k:]]
        return replace(state, params=params, round_num=state.round_num + 1), {}

    # -- client side ---------------------------------------------------------------
    def personal_model(self, params: Params, state: dict[str, object]) -> Params:
        """The global body with the client's own head (the global head until it has one)."""
        k = self.body(len(params))
        head = state.get(STATE_KEY)
        if not isinstance(head, list):
            return params
        return [*params[:k], *head]

    def client_params(self, params: Params, ins: FitInstructions, ctx: ClientContext) -> Params:
        return self.personal_model(params, ctx.state)

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
        k = self.body(len(local_params))
        ctx.state[STATE_KEY] = [np.array(p, dtype=np.float32, copy=True) for p in local_params[k:]]
        update.delta = [*update.delta[:k], *(np.zeros(0, dtype=np.float32) for _ in update.delta[k:])]
        return update

    def client_evaluate(self, client: Client, params: Params, ctx: ClientContext) -> EvalResult:
        return with_personal(client, params, self.personal_model(params, ctx.state) if STATE_KEY in ctx.state else None)
