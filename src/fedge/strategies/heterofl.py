"""HeteroFL: Diao, Ding and Tarokh, "HeteroFL: Computation and Communication Efficient
Federated Learning for Heterogeneous Clients", ICLR 2021.

Client ``k`` trains the sub-model of width ratio ``r_k`` (1, 1/2, 1/4, ...): the first
``ceil(r_k * d)`` units of every hidden layer, i.e. the leading-corner block of every
parameter tensor, with the input and output layers' outer sizes kept. The server averages
every parameter entry over the clients that hold it (weighted as FedAvg weights) and
keeps entries nobody held. With every ``r_k = 1`` this is FedAvg, exactly.

``widths`` maps client ids to ratios (clients not in it train the full model);
:func:`fedge.devices.widths.choose_widths` picks them from each device's memory, FLOP
throughput and the round deadline. ``layout`` names how a ratio maps to tensor blocks:
``"mlp"`` (a chain of Linear layers) or ``"cnn"`` (fedge's built-in CNN: convolutions,
then one Linear layer over the flattened channels). The paper's static batch norm and
scaler module are not used (the built-in models have no normalisation layers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fedge.core.errors import ConfigError
from fedge.core.params import Params, ParamSpec
from fedge.core.types import ClientContext, ClientUpdate, EvalResult, FitInstructions, Metrics, TrainConfig
from fedge.strategies.aggregate import Terms, apply_step, block_mean, block_terms, corner, scalar
from fedge.strategies.base import Strategy, StrategyState, Weighting

if TYPE_CHECKING:
    from fedge.clients.base import Client

Shape = tuple[int, ...]
LAYOUTS = ("mlp", "cnn")


def scaled(d: int, ratio: float) -> int:
    """``ceil(ratio * d)`` units of a hidden dimension of size ``d`` (at least one)."""
    if not 0 < ratio <= 1:
        raise ConfigError(f"heterofl: a width ratio must be in (0, 1], got {ratio}")
    return max(1, math.ceil(round(ratio * d, 9)))


def width_shapes(shapes: Sequence[Shape], ratio: float, layout: str = "mlp") -> tuple[Shape, ...]:
    """The block shapes of the width-``ratio`` sub-model of a model with tensor ``shapes``."""
    if layout not in LAYOUTS:
        raise ConfigError(f"heterofl.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if ratio == 1:
        return tuple(tuple(s) for s in shapes)
    if len(shapes) % 2:
        raise ConfigError(f"heterofl: expected (weight, bias) pairs, got {len(shapes)} tensors")
    n_layers = len(shapes) // 2
    out: list[Shape] = []
    prev_full = prev_sub = 0
    for i in range(n_layers):
        w = tuple(shapes[2 * i])
        last = i == n_layers - 1
        rows = w[0] if last else scaled(w[0], ratio)
        if i == 0:
            cols = w[1]
        elif layout == "cnn" and len(w) == 2 and prev_full and w[1] % prev_full == 0:
            cols = w[1] // prev_full * prev_sub
        else:
            cols = scaled(w[1], ratio)
        out += [(rows, cols, *w[2:]), (rows,)]
        prev_full, prev_sub = w[0], rows
    return tuple(out)


def sub_model(params: Params, shapes: Sequence[Shape]) -> Params:
    """The leading-corner blocks of ``params`` (copies)."""
    return [np.array(p[corner(s)], dtype=np.float32, copy=True) for p, s in zip(params, shapes, strict=True)]


class HeteroFL(Strategy):
    name: ClassVar[str] = "heterofl"
    per_client_models: ClassVar[bool] = True
    partial_updates: ClassVar[bool] = True
    config_section: ClassVar[str] = "heterofl"

    def __init__(
        self,
        *,
        widths: Mapping[int, float] | None = None,
        layout: str = "mlp",
        server_lr: float = 1.0,
        weighting: Weighting = "examples",
    ) -> None:
        super().__init__(server_lr=server_lr, weighting=weighting)
        if layout not in LAYOUTS:
            raise ConfigError(f"heterofl.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.widths = {int(c): float(r) for c, r in (widths or {}).items()}
        for r in self.widths.values():
            scaled(1, r)
        self.layout = layout
        self._shapes: tuple[Shape, ...] = ()
        """The full model's shapes, taken from the state in ``init``/``configure``."""

    def ratio(self, client_id: int) -> float:
        return self.widths.get(client_id, 1.0)

    def init(self, params: Params, *, num_clients: int) -> StrategyState:
        self._shapes = ParamSpec.of(params).shapes
        return super().init(params, num_clients=num_clients)

    def configure(self, state: StrategyState, round_num: int, train: TrainConfig) -> FitInstructions:
        self._shapes = ParamSpec.of(state.params).shapes
        return super().configure(state, round_num, train)

    def update_spec(self, spec: ParamSpec, client_id: int) -> ParamSpec:
        return ParamSpec(width_shapes(spec.shapes, self.ratio(client_id), self.layout))

    def downlink_spec(self, spec: ParamSpec, client_id: int) -> ParamSpec:
        return self.update_spec(spec, client_id)

    def client_view(self, client_id: int) -> dict[str, float | str]:
        return {"width": self.ratio(client_id), "layout": self.layout}

    def bind_view(self, client_id: int, view: dict[str, float | str]) -> None:
        layout = str(view.get("layout", self.layout))
        if layout not in LAYOUTS:
            raise ConfigError(f"heterofl.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        ratio = float(view.get("width", 1.0))
        scaled(1, ratio)  # refuses a ratio outside (0, 1]
        self.widths[int(client_id)] = ratio
        self.layout = layout

    def contribution(self, update: ClientUpdate) -> Terms:
        w = self.weight(update)
        terms = block_terms(update.delta, self._shapes, w)
        terms["weight"] = scalar(w)
        return terms

    def aggregate(self, state: StrategyState, sums: Terms) -> tuple[StrategyState, Metrics]:
        mean = block_mean(sums["delta"], sums["count"])
        new = replace(state, params=apply_step(state.params, mean, self.server_lr), round_num=state.round_num + 1)
        return new, {}

    # -- client side ---------------------------------------------------------------
    def client_params(self, params: Params, ins: FitInstructions, ctx: ClientContext) -> Params:
        shapes = width_shapes(ParamSpec.of(params).shapes, self.ratio(ctx.client_id), self.layout)
        return sub_model(params, shapes)

    def client_evaluate(self, client: Client, params: Params, ctx: ClientContext) -> EvalResult:
        shapes = width_shapes(ParamSpec.of(params).shapes, self.ratio(ctx.client_id), self.layout)
        return client.evaluate(sub_model(params, shapes))
