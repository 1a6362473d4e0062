"""fedge: federated learning for edge devices.

The public surface is small on purpose; everything else lives in its subpackage.
"""

from fedge.api import run
from fedge.clients import ClientData, LearnerClient, NumpyLogReg, NumpyMLP
from fedge.core import (
    ClientUpdate,
    ConfigError,
    DataError,
    FedgeError,
    FitInstructions,
    Params,
    TrainConfig,
    ValidationError,
)
from fedge.engine import Callback, RunResult
from fedge.pipeline import Pipeline, Transform
from fedge.simulation import History, RoundRecord, Sampling
from fedge.strategies import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    QFedAvg,
    Scaffold,
    Strategy,
)
from fedge.transport import InProcessTransport

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "ClientData",
    "ClientUpdate",
    "ConfigError",
    "DataError",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "FedgeError",
    "FitInstructions",
    "History",
    "InProcessTransport",
    "LearnerClient",
    "NumpyLogReg",
    "NumpyMLP",
    "Params",
    "Pipeline",
    "QFedAvg",
    "RoundRecord",
    "RunResult",
    "Sampling",
    "Scaffold",
    "Strategy",
    "TrainConfig",
    "Transform",
    "ValidationError",
    "__version__",
    "run",
]
