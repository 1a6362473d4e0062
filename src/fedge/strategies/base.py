"""The Strategy seam: hyperparameters and state transitions, never the round loop.

A strategy is used in three places:

* on the server, ``init`` then, each round, ``configure`` (what clients are told) and
  ``aggregate`` (a state transition from the summed ``contribution`` of each update);
* on the client, ``client_prepare`` and ``client_finish`` wrap local training
  (FedProx's proximal term, SCAFFOLD's control variates) wherever the client runs;
* in between, ``contribution`` turns one decoded update into the named terms that
  are summed as updates stream in, so the server never holds the whole cohort.
  Strategies that truly need every update set ``needs_individual_updates`` and
  implement ``aggregate_updates`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from fedge.core.errors import AggregationError
from fedge.core.params import Params, sub
from fedge.core.types import ClientContext, ClientUpdate, FitInstructions, Metrics, TrainConfig
from fedge.strategies.aggregate import Terms, apply_step, as_f64, finish_mean, scalar

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

    # -- client side ---------------------------------------------------------------
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


def delta_of(local: Params, global_params: Params) -> Params:
    """A client's delta: local minus global, float32."""
    return [np.asarray(d, dtype=np.float32) for d in sub(local, global_params)]
