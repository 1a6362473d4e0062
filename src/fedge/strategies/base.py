"""The Strategy seam: hyperparameters and state transitions, never the round loop.

A strategy is used in three places:

* on the server, ``init`` then, each round, ``configure`` (what clients are told) and
  ``aggregate`` (a state transition from the summed ``contribution`` of each update);
* on the client, ``client_prepare`` and ``client_finish`` wrap local training
  (FedProx's proximal term, SCAFFOLD's control variates) wherever the client runs;
* around the client's model, ``client_params`` (the model it trains: a personal head, a
  sub-model), ``client_train`` (extra local work, e.g. Ditto's personal model) and
  ``client_evaluate`` (its personal model next to the global one) let personalisation
  strategies keep per-client models in the client's own ``ctx.state``;
* in between, ``contribution`` turns one decoded update into the named terms that
  are summed as updates stream in, so the server never holds the whole cohort.
  Strategies that truly need every update set ``needs_individual_updates`` and
  implement ``aggregate_updates`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fedge.core.errors import AggregationError
from fedge.core.params import Params, ParamSpec, sub
from fedge.core.types import ClientContext, ClientUpdate, EvalResult, FitInstructions, Metrics, TrainConfig
from fedge.strategies.aggregate import Terms, apply_step, as_f64, finish_mean, scalar

if TYPE_CHECKING:
    from fedge.clients.base import Client, TrainResult

Weighting = str  # "examples" | "uniform"
WEIGHTINGS = ("examples", "uniform")


@dataclass
class StrategyState:
    """Everything a strategy needs to continue a run: checkpointed after every round.

    ``slots`` holds named tensor lists (optimiser moments, control variates);
    ``scalars`` plain numbers. Both are plain data so they serialise to SQLite/npz.
    """

    params: Params
    round_num: int = 0
    slots: dict[str, Params] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)


class Strategy:
    """Base class: FedAvg's behaviour, which most strategies refine."""

    name: ClassVar[str] = "base"
    needs_individual_updates: ClassVar[bool] = False
    personal: ClassVar[bool] = False
    """Clients keep a personal model; evaluation reports it next to the global model's."""
    per_client_models: ClassVar[bool] = False
    """Clients do not all train the model they were sent (a personal head, a sub-model), so a
    backend that trains one shared model for the whole cohort (``vectorized``) refuses it."""
    partial_updates: ClassVar[bool] = False
    """An update holds only part of the model (a sub-model, the shared body), so transforms
    that need whole-model updates (compression codecs, secure aggregation) refuse it."""

    def __init__(self, *, server_lr: float = 1.0, weighting: Weighting = "examples") -> None:
        if weighting not in WEIGHTINGS:
            raise AggregationError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if not server_lr > 0:
            raise AggregationError(f"server_lr must be positive, got {server_lr}")
        self.server_lr = float(server_lr)
        self.weighting = weighting

    # -- server side ---------------------------------------------------------------
    def init(self, params: Params, *, num_clients: int) -> StrategyState:
        return StrategyState(params=[p.copy() for p in params], scalars={"num_clients": num_clients})

    def configure(self, state: StrategyState, round_num: int, train: TrainConfig) -> FitInstructions:
        return FitInstructions(round_num=round_num, train=train)

    def weight(self, update: ClientUpdate) -> float:
        return float(update.num_examples) if self.weighting == "examples" else 1.0

    def contribution(self, update: ClientUpdate) -> Terms:
        w = self.weight(update)
        return {"delta": as_f64(update.delta, w), "weight": scalar(w)}

    def aggregate(self, state: StrategyState, sums: Terms) -> tuple[StrategyState, Metrics]:
        mean = self.mean_delta(sums)
        new = replace(state, params=apply_step(state.params, mean, self.server_lr), round_num=state.round_num + 1)
        return new, {}

    def aggregate_updates(self, state: StrategyState, updates: list[ClientUpdate]) -> tuple[StrategyState, Metrics]:
        raise NotImplementedError(f"{self.name} aggregates streamed sums, not update lists")

    @staticmethod
    def mean_delta(sums: Terms) -> Params:
        return finish_mean(sums["delta"], float(sums["weight"][0][0]))

    def update_spec(self, spec: ParamSpec, client_id: int) -> ParamSpec:
        """The shapes of the delta ``client_id`` sends, given the global model's (all of it by default)."""
        return spec

    def downlink_spec(self, spec: ParamSpec, client_id: int) -> ParamSpec:
        """The shapes of the model ``client_id`` needs from the server (all of it by default)."""
        return spec

    def client_view(self, client_id: int) -> dict[str, float | str]:
        """What a deployed node of ``client_id`` must be told about the model it holds, beyond its
        shapes (HeteroFL: its width ratio); empty by default. Clients with equal specs and views
        share one serialised task (:mod:`fedge.deploy.classes`)."""
        return {}

    def bind_view(self, client_id: int, view: dict[str, float | str]) -> None:
        """On a node: take in the server's :meth:`client_view` for ``client_id`` (nothing by default)."""

    # -- client side ---------------------------------------------------------------
    def client_params(self, params: Params, ins: FitInstructions, ctx: ClientContext) -> Params:
        """The model this client trains from the global ``params`` it received (the same by default)."""
        return params

    def client_train(
        self, client: Client, params: Params, cfg: TrainConfig, *, ins: FitInstructions, ctx: ClientContext
    ) -> TrainResult:
        """The client's local work on ``params`` (from :meth:`client_params`); its result is what it sends."""
        return client.train(params, cfg, ctx)

    def client_evaluate(self, client: Client, params: Params, ctx: ClientContext) -> EvalResult:
        """The global ``params`` on the client's own test data; a personalising strategy adds
        ``personal_accuracy`` and ``personal_loss`` to the result's metrics."""
        return client.evaluate(params)

    def client_prepare(self, ins: FitInstructions, ctx: ClientContext) -> TrainConfig:
        return ins.train

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
        return update

    def describe(self) -> dict[str, Any]:
        """Hyperparameters, for the resolved config and reports."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def with_personal(client: Client, params: Params, personal: Params | None) -> EvalResult:
    """The global ``params`` evaluated on the client, with ``personal``'s accuracy and loss in its metrics
    (the global model's own when the client has no personal model yet)."""
    result = client.evaluate(params)
    mine = result if personal is None else client.evaluate(personal)
    result.metrics["personal_accuracy"] = float(mine.accuracy)
    result.metrics["personal_loss"] = float(mine.loss)
    return result


def delta_of(local: Params, global_params: Params) -> Params:
    """A client's delta: local minus global, float32."""
    return [np.asarray(d, dtype=np.float32) for d in sub(local, global_params)]
