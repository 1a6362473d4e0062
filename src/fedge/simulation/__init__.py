"""The round loop, client sampling and the run history."""

from fedge.simulation.history import History, RoundRecord
from fedge.simulation.loop import (
    Callback,
    EvalPlan,
    RoundPlan,
    RoundPolicy,
    RunResult,
    StopRun,
    run,
    run_round,
)
from fedge.simulation.sampling import Sampling

__all__ = [
    "Callback",
    "EvalPlan",
    "History",
    "RoundPlan",
    "RoundPolicy",
    "RoundRecord",
    "RunResult",
    "Sampling",
    "StopRun",
    "run",
    "run_round",
]
