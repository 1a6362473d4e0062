"""Core types shared by every part of fedge."""

from fedge.core.errors import (
    AggregationError,
    ClientError,
    ConfigError,
    DataError,
    FedgeError,
    ModelError,
    TransportError,
    ValidationError,
)
from fedge.core.params import Array, Params, ParamSpec, flatten, unflatten
from fedge.core.types import (
    ClientContext,
    ClientUpdate,
    EvalResult,
    FitInstructions,
    Metrics,
    TrainConfig,
)

__all__ = [
    "AggregationError",
    "Array",
    "ClientContext",
    "ClientError",
    "ClientUpdate",
    "ConfigError",
    "DataError",
    "EvalResult",
    "FedgeError",
    "FitInstructions",
    "Metrics",
    "ModelError",
    "ParamSpec",
    "Params",
    "TrainConfig",
    "TransportError",
    "ValidationError",
    "flatten",
    "unflatten",
]
