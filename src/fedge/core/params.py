"""Model parameters: a list of float32 NumPy arrays, and a flat-vector view of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ValidationError

Array = npt.NDArray[np.float32]
Params = list[Array]
"""A model's parameters in a fixed order, each a float32 array."""


@dataclass(frozen=True)
class ParamSpec:
    """The shapes of a model's parameters: enough to check and (un)flatten them."""

    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, params: Sequence[npt.NDArray[np.generic]]) -> ParamSpec:
        return cls(tuple(tuple(int(d) for d in p.shape) for p in params))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s)) for s in self.shapes)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def check(self, params: Sequence[npt.NDArray[np.generic]], what: str = "update") -> None:
        """Raise :class:`ValidationError` unless ``params`` has exactly these shapes."""
        if len(params) != len(self.shapes):
            raise ValidationError(f"{what} has {len(params)} tensors, expected {len(self.shapes)}")
        for i, (p, s) in enumerate(zip(params, self.shapes, strict=True)):
            if tuple(p.shape) != s:
                raise ValidationError(f"{what} tensor {i} has shape {tuple(p.shape)}, expected {s}")


def as_params(arrays: Sequence[npt.ArrayLike]) -> Params:
    """Copy ``arrays`` into a fresh list of contiguous float32 arrays."""
    return [np.array(a, dtype=np.float32, copy=True, order="C") for a in arrays]


def flatten(params: Sequence[npt.NDArray[np.generic]], dtype: type = np.float32) -> Array:
    """Concatenate ``params`` into one flat vector (a copy)."""
    if not params:
        return np.zeros(0, dtype=dtype)
    return np.concatenate([np.asarray(p, dtype=dtype).ravel() for p in params])


def unflatten(vector: npt.NDArray[np.generic], spec: ParamSpec) -> Params:
    """Split a flat vector back into arrays of ``spec``'s shapes (float32 copies)."""
    if vector.ndim != 1 or vector.size != spec.total:
        raise ValidationError(f"flat vector has {vector.size} values, expected {spec.total}")
    out: Params = []
    start = 0
    for shape, size in zip(spec.shapes, spec.sizes, strict=True):
        out.append(np.array(vector[start : start + size], dtype=np.float32).reshape(shape))
        start += size
    return out


def zeros_like(params: Sequence[npt.NDArray[np.generic]]) -> Params:
    return [np.zeros(p.shape, dtype=np.float32) for p in params]


def add(a: Sequence[Array], b: Sequence[Array]) -> Params:
    return [x + y for x, y in zip(a, b, strict=True)]


def sub(a: Sequence[Array], b: Sequence[Array]) -> Params:
    return [x - y for x, y in zip(a, b, strict=True)]


def scale(a: Sequence[Array], factor: float) -> Params:
    f = np.float32(factor)
    return [x * f for x in a]


def l2_norm(params: Sequence[npt.NDArray[np.generic]]) -> float:
    """Global L2 norm over every tensor, computed in float64."""
    return float(np.sqrt(sum(float(np.sum(np.square(p, dtype=np.float64))) for p in params)))


def all_finite(params: Sequence[npt.NDArray[np.generic]]) -> bool:
    return all(bool(np.all(np.isfinite(p))) for p in params)


def nbytes(params: Sequence[npt.NDArray[np.generic]]) -> int:
    return int(sum(p.nbytes for p in params))
