"""Transports: how the round loop reaches clients (in-process today, gRPC for devices)."""

from fedge.transport.base import (
    ClientFailure,
    FitResult,
    PartialSum,
    Reducer,
    Transport,
    Validator,
)
from fedge.transport.inprocess import (
    BACKENDS,
    Backend,
    ClientRuntime,
    DebugBackend,
    InProcessTransport,
    SequentialBackend,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "ClientFailure",
    "ClientRuntime",
    "DebugBackend",
    "FitResult",
    "InProcessTransport",
    "PartialSum",
    "Reducer",
    "SequentialBackend",
    "Transport",
    "Validator",
]
