"""Aggregation maths as short, pure NumPy functions that strategies compose.

Sums are kept in float64 so that the order in which updates arrive changes the
result by no more than float64 rounding (far below the float32 parameters' ulp).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from fedge.core.errors import AggregationError
from fedge.core.params import Array, Params

F64 = npt.NDArray[np.float64]
Terms = dict[str, list[F64]]
"""Named sums a strategy needs from a round, e.g. ``{"delta": [...], "weight": [w]}``."""


def weighted_sum(tensors: Iterable[Sequence[npt.NDArray[np.generic]]], weights: Iterable[float]) -> list[F64]:
    """``sum_i w_i * x_i`` tensor by tensor, in float64."""
    out: list[F64] | None = None
    for x, w in zip(tensors, weights, strict=True):
        if out is None:
            out = [np.asarray(t, dtype=np.float64) * w for t in x]
        else:
            for acc, t in zip(out, x, strict=True):
                acc += np.asarray(t, dtype=np.float64) * w
    if out is None:
        raise AggregationError("cannot aggregate zero updates")
    return out


def weighted_mean(tensors: Sequence[Sequence[npt.NDArray[np.generic]]], weights: Sequence[float]) -> Params:
    """``sum_i w_i x_i / sum_i w_i`` as float32 tensors (McMahan et al. 2017, eq. of FedAvg)."""
    total = float(np.sum(np.asarray(weights, dtype=np.float64)))
    if not total > 0:
        raise AggregationError(f"total aggregation weight is {total}, must be positive")
    return finish_mean(weighted_sum(tensors, weights), total)


def finish_mean(sums: Sequence[F64], total_weight: float) -> Params:
    """Divide accumulated float64 sums by the total weight and return float32 tensors."""
    if not total_weight > 0:
        raise AggregationError(f"total aggregation weight is {total_weight}, must be positive")
    return [(s / total_weight).astype(np.float32) for s in sums]


def scalar(x: float) -> list[F64]:
    """A scalar as a one-tensor term, so it sums like any other term."""
    return [np.asarray([x], dtype=np.float64)]


def as_f64(params: Sequence[npt.NDArray[np.generic]], factor: float = 1.0) -> list[F64]:
    return [np.asarray(p, dtype=np.float64) * factor for p in params]


def apply_step(params: Sequence[Array], step: Sequence[npt.NDArray[np.generic]], lr: float = 1.0) -> Params:
    """``params + lr * step`` in float32."""
    return [
        (p + np.float32(lr) * np.asarray(s, dtype=np.float32)).astype(np.float32)
        for p, s in zip(params, step, strict=True)
    ]


class Accumulator:
    """Streaming sum of named terms: add one contribution (or a partial sum) at a time.

    The server never holds more than one running sum per term, whatever the cohort size.
    """

    def __init__(self) -> None:
        self.sums: Terms = {}
        self.count = 0

    def add(self, terms: Terms, count: int = 1) -> None:
        for name, tensors in terms.items():
            acc = self.sums.get(name)
            if acc is None:
                self.sums[name] = [np.array(t, dtype=np.float64, copy=True) for t in tensors]
            else:
                if len(acc) != len(tensors):
                    raise AggregationError(f"term {name!r} has {len(tensors)} tensors, expected {len(acc)}")
                for a, t in zip(acc, tensors, strict=True):
                    a += t
        self.count += count

    def merge(self, other: Accumulator) -> None:
        self.add(other.sums, other.count)


def corner(shape: Sequence[int]) -> tuple[slice, ...]:
    """The index of a leading-corner block of ``shape`` (the first ``d`` entries of every axis)."""
    return tuple(slice(0, int(d)) for d in shape)


def block_terms(blocks: Sequence[npt.NDArray[np.generic]], shapes: Sequence[Sequence[int]], weight: float) -> Terms:
    """A sub-model's weighted delta placed in the full model's shapes, and how much weight each entry got.

    ``blocks[i]`` is the leading-corner block of tensor ``i`` the client holds (HeteroFL's
    sub-model); entries outside it contribute nothing and count nothing.
    """
    delta: list[F64] = []
    count: list[F64] = []
    for b, shape in zip(blocks, shapes, strict=True):
        d = np.zeros(tuple(shape), dtype=np.float64)
        c = np.zeros(tuple(shape), dtype=np.float64)
        idx = corner(b.shape)
        d[idx] = np.asarray(b, dtype=np.float64) * weight
        c[idx] = weight
        delta.append(d)
        count.append(c)
    return {"delta": delta, "count": count}


def block_mean(sums: Sequence[F64], counts: Sequence[F64]) -> Params:
    """Entry-wise ``sum / count`` over the clients that hold each entry; 0 where none did (float32)."""
    out: Params = []
    for s, c in zip(sums, counts, strict=True):
        mean = np.zeros_like(s)
        np.divide(s, c, out=mean, where=c > 0)
        out.append(mean.astype(np.float32))
    return out
