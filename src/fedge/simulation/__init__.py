"""Client sampling and the run history; the round loop itself is :mod:`fedge.engine`."""

from fedge.simulation.history import History, RoundRecord
from fedge.simulation.sampling import Sampling

__all__ = [
    "History",
    "RoundRecord",
    "Sampling",
]
