"""Transports: how the round engine reaches clients (in-process for simulation, gRPC for devices).

What the server does with what arrives (validation, reduction) is :mod:`fedge.engine.aggregator`.
"""

from fedge.transport.base import Arrival, Dispatcher, FitResult, Transport
from fedge.transport.inprocess import (
    BACKENDS,
    Backend,
    ClientRuntime,
    DebugBackend,
    FitTask,
    InProcessTransport,
    SequentialBackend,
)

__all__ = [
    "BACKENDS",
    "Arrival",
    "Backend",
    "ClientRuntime",
    "DebugBackend",
    "Dispatcher",
    "FitResult",
    "FitTask",
    "InProcessTransport",
    "SequentialBackend",
    "Transport",
]
