"""The round engine: the loop that simulation and deployment both run.

A run is a sequence of rounds over one :class:`~fedge.transport.base.Transport`; the
engine samples, configures, hands the cohort to the transport, reduces what comes back and
steps the strategy. The transport decides only where clients run.
"""

from fedge.engine.aggregator import Aggregator, ClientFailure, PartialSum, Reducer, Validator
from fedge.engine.rounds import (
    Callback,
    EvalPlan,
    Evaluator,
    RoundPlan,
    RoundPolicy,
    RunResult,
    StopRun,
    check_pipeline,
    round_rng,
    run,
    run_round,
    worst_mean,
)
from fedge.engine.state import RoundState

__all__ = [
    "Aggregator",
    "Callback",
    "ClientFailure",
    "EvalPlan",
    "Evaluator",
    "PartialSum",
    "Reducer",
    "RoundPlan",
    "RoundPolicy",
    "RoundState",
    "RunResult",
    "StopRun",
    "Validator",
    "check_pipeline",
    "round_rng",
    "run",
    "run_round",
    "worst_mean",
]
