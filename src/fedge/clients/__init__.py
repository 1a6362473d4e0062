"""Clients: the client seam, a PyTorch adapter and NumPy-only models."""

from fedge.clients.base import (
    Client,
    ClientData,
    Learner,
    LearnerClient,
    TrainResult,
    run_fit,
)
from fedge.clients.numpy_models import NumpyLogReg, NumpyMLP

__all__ = [
    "Client",
    "ClientData",
    "Learner",
    "LearnerClient",
    "NumpyLogReg",
    "NumpyMLP",
    "TrainResult",
    "run_fit",
]
