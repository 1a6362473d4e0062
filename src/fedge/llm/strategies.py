"""Strategies on LoRA adapters: average the factors, or average their product.

A LoRA adapter changes a layer by ``ΔW = B @ A`` (times a constant). Averaging ``A``
and ``B`` separately, as plain FedAvg does, gives ``mean(B) @ mean(A)``, which is not
``mean(B @ A)``: the cross terms between clients do not cancel (pointed out by
Sun et al., "Improving LoRA in Privacy-preserving Federated Learning", ICLR 2024, and
Singhal et al., "FedEx-LoRA: Exact Aggregation for Federated and Efficient Fine-Tuning
of Foundation Models", 2024).

* :class:`LoraFedAvg` is FedAvg on ``A`` and ``B`` (McMahan et al., AISTATS 2017) and
  reports that gap as ``product_gap`` (relative Frobenius error of the product).
* :class:`FlexLoRA` averages in the product space: each client contributes
  ``w_i * B_i @ A_i``; the server forms the exact weighted mean ``ΔW`` and splits it
  back into rank-``r`` factors by truncated SVD, the best rank-``r`` approximation
  (Eckart–Young). This is the aggregation of FlexLoRA: Bai et al., "Federated
  Fine-tuning of Large Language Models under Heterogeneous Tasks and Client Resources",
  NeurIPS 2024. It reports ``truncation_error``, the relative error of that split.

Both expect :class:`~fedge.llm.model.Adapter` order: ``A`` then ``B`` for each layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from fedge.core.errors import AggregationError
from fedge.core.params import Params
from fedge.core.types import ClientUpdate, FitInstructions, Metrics, TrainConfig
from fedge.strategies.aggregate import F64, Terms, scalar
from fedge.strategies.base import Strategy, StrategyState
from fedge.strategies.fedavg import FedAvg


def lora_pairs(shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, int]]:
    """Indices ``(a, b)`` of each layer's factors; checks ``A: (r, d_in)``, ``B: (d_out, r)``."""
    if len(shapes) % 2 or not shapes:
        raise AggregationError(f"a LoRA adapter has an even, non-zero number of tensors, got {len(shapes)}")
    pairs = []
    for i in range(0, len(shapes), 2):
        a, b = shapes[i], shapes[i + 1]
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise AggregationError(f"tensors {i} {a} and {i + 1} {b} are not a LoRA pair (A: r x d_in, B: d_out x r)")
        pairs.append((i, i + 1))
    return pairs


def products(
    params: Sequence[npt.NDArray[np.generic]], pairs: Sequence[tuple[int, int]], factor: float = 1.0
) -> list[F64]:
    """``factor * B @ A`` of every layer, in float64."""
    return [factor * (np.asarray(params[b], np.float64) @ np.asarray(params[a], np.float64)) for a, b in pairs]


def factorise(delta_w: npt.NDArray[np.floating], rank: int) -> tuple[F64, F64]:
    """Best rank-``rank`` factors ``(B, A)`` of ``delta_w`` by SVD, balanced as ``U√S, √S Vᵀ``."""
    u, s, vt = np.linalg.svd(np.asarray(delta_w, np.float64), full_matrices=False)
    k = min(rank, len(s))
    root = np.sqrt(s[:k])
    b = np.zeros((delta_w.shape[0], rank))
    a = np.zeros((rank, delta_w.shape[1]))
    b[:, :k] = u[:, :k] * root
    a[:k] = root[:, None] * vt[:k]
    return b, a


def relative_error(exact: Sequence[F64], approx: Sequence[F64]) -> float:
    """``‖exact − approx‖_F / ‖exact‖_F`` over all layers (0 when both are zero)."""
    num = sum(float(np.sum((e - x) ** 2)) for e, x in zip(exact, approx, strict=True))
    den = sum(float(np.sum(e**2)) for e in exact)
    return float(np.sqrt(num / den)) if den > 0 else 0.0


def _local(global_params: Params, delta: Params) -> list[F64]:
    return [np.asarray(g, np.float64) + np.asarray(d, np.float64) for g, d in zip(global_params, delta, strict=True)]


class _AdapterStrategy(Strategy):
    """Remembers the round's global adapter so contributions can rebuild local factors."""

    _pairs: list[tuple[int, int]]
    _global: Params

    def init(self, params: Params, *, num_clients: int) -> StrategyState:
        self._pairs = lora_pairs([p.shape for p in params])
        self._global = [p.copy() for p in params]
        return super().init(params, num_clients=num_clients)

    def configure(self, state: StrategyState, round_num: int, train: TrainConfig) -> FitInstructions:
        self._pairs = lora_pairs([p.shape for p in state.params])
        self._global = [p.copy() for p in state.params]
        return super().configure(state, round_num, train)

    def _local_products(self, update: ClientUpdate, factor: float) -> list[F64]:
        return products(_local(self._global, update.delta), self._pairs, factor)


class LoraFedAvg(_AdapterStrategy, FedAvg):
    """FedAvg of the A and B matrices; ``report_gap`` also measures ``product_gap``."""

    name: ClassVar[str] = "lora-fedavg"

    def __init__(self, *, server_lr: float = 1.0, weighting: str = "examples", report_gap: bool = True) -> None:
        super().__init__(server_lr=server_lr, weighting=weighting)
        self.report_gap = report_gap

    def contribution(self, update: ClientUpdate) -> Terms:
        terms = super().contribution(update)
        if self.report_gap:
            w = self.weight(update)
            for k, p in enumerate(self._local_products(update, w)):
                terms[f"prod{k}"] = [p]
        return terms

    def aggregate(self, state: StrategyState, sums: Terms) -> tuple[StrategyState, Metrics]:
        new, metrics = super().aggregate(state, sums)
        if self.report_gap and "prod0" in sums:
            total = float(sums["weight"][0][0])
            exact = [sums[f"prod{k}"][0] / total for k in range(len(self._pairs))]
            metrics = {**metrics, "product_gap": relative_error(exact, products(new.params, self._pairs))}
        return new, metrics


class FlexLoRA(_AdapterStrategy):
    """Product-space averaging: exact weighted mean of ``B_i @ A_i``, split back by SVD."""

    name: ClassVar[str] = "flexlora"

    def contribution(self, update: ClientUpdate) -> Terms:
        w = self.weight(update)
        terms = {f"prod{k}": [p] for k, p in enumerate(self._local_products(update, w))}
        terms["weight"] = scalar(w)
        return terms

    def aggregate(self, state: StrategyState, sums: Terms) -> tuple[StrategyState, Metrics]:
        total = float(sums["weight"][0][0])
        if not total > 0:
            raise AggregationError(f"total aggregation weight is {total}, must be positive")
        pairs = lora_pairs([p.shape for p in state.params])
        old = products(state.params, pairs)
        targets = [o + self.server_lr * (sums[f"prod{k}"][0] / total - o) for k, o in enumerate(old)]
        params = [p.copy() for p in state.params]
        for (a, b), target in zip(pairs, targets, strict=True):
            new_b, new_a = factorise(target, state.params[a].shape[0])
            params[a], params[b] = new_a.astype(np.float32), new_b.astype(np.float32)
        err = relative_error(targets, products(params, pairs))
        return replace(state, params=params, round_num=state.round_num + 1), {"truncation_error": err}
