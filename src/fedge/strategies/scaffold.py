"""SCAFFOLD: Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning", ICML 2020 (Algorithm 1, option II).

Client ``i`` corrects every local step by ``c - c_i``:
``y <- y - η_l (g_i(y) + c - c_i)``; after ``K`` steps it sets
``c_i+ = c_i - c + (x - y) / (K η_l)`` and sends ``Δy = y - x`` and ``Δc = c_i+ - c_i``.
The server sets ``x <- x + η_g · mean(Δy)`` and ``c <- c + (1/N) Σ Δc``.
The client control variate ``c_i`` lives in the client's own state, never on the server.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np

from fedge.core.params import Params, zeros_like
from fedge.core.types import ClientContext, ClientUpdate, FitInstructions, Metrics, TrainConfig
from fedge.strategies.aggregate import Terms, apply_step, as_f64
from fedge.strategies.base import Strategy, StrategyState, Weighting

STATE_KEY = "scaffold_c"


def new_client_control(c_i: Params, c: Params, delta: Params, steps: int, lr: float) -> Params:
    """Option II: ``c_i - c + (x - y) / (K η_l)`` with ``x - y = -delta``."""
    k = 1.0 / (max(steps, 1) * lr)
    return [(ci - cg - np.float32(k) * d).astype(np.float32) for ci, cg, d in zip(c_i, c, delta, strict=True)]


class Scaffold(Strategy):
    name: ClassVar[str] = "scaffold"

    def __init__(self, *, server_lr: float = 1.0, weighting: Weighting = "uniform") -> None:
        super().__init__(server_lr=server_lr, weighting=weighting)

    def init(self, params: Params, *, num_clients: int) -> StrategyState:
        state = super().init(params, num_clients=num_clients)
        state.slots["c"] = zeros_like(params)
        return state

    def configure(self, state: StrategyState, round_num: int, train: TrainConfig) -> FitInstructions:
        return FitInstructions(round_num=round_num, train=train, config={"c": state.slots["c"]})

    def contribution(self, update: ClientUpdate) -> Terms:
        terms = super().contribution(update)
        terms["dc"] = as_f64(update.extras["dc"])
        return terms

    def aggregate(self, state: StrategyState, sums: Terms) -> tuple[StrategyState, Metrics]:
        n = float(state.scalars["num_clients"])
        c = [(cg + (s / n)).astype(np.float32) for cg, s in zip(state.slots["c"], sums["dc"], strict=True)]
        x = apply_step(state.params, self.mean_delta(sums), self.server_lr)
        return replace(state, params=x, slots={**state.slots, "c": c}, round_num=state.round_num + 1), {}

    # -- client side ---------------------------------------------------------------
    def client_prepare(self, ins: FitInstructions, ctx: ClientContext) -> TrainConfig:
        c: Params = ins.config["c"]
        c_i: Params = ctx.state.get(STATE_KEY) or zeros_like(c)
        correction = [(cg - ci).astype(np.float32) for cg, ci in zip(c, c_i, strict=True)]
        return replace(ins.train, grad_correction=correction)

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
        c: Params = ins.config["c"]
        c_i: Params = ctx.state.get(STATE_KEY) or zeros_like(c)
        c_new = new_client_control(c_i, c, update.delta, steps, ins.train.lr)
        ctx.state[STATE_KEY] = c_new
        update.extras["dc"] = [(a - b).astype(np.float32) for a, b in zip(c_new, c_i, strict=True)]
        return update
