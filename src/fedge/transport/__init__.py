"""Transports: how the round engine reaches clients (in-process for simulation, gRPC for devices).

What the server does with what arrives (validation, reduction) is :mod:`fedge.engine.aggregator`.
"""

from fedge.transport.base import FitResult, Transport
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
    "Backend",
    "ClientRuntime",
    "DebugBackend",
    "FitResult",
    "FitTask",
    "InProcessTransport",
    "SequentialBackend",
    "Transport",
]
