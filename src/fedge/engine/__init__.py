"""The round engine: the loop that simulation and deployment both run.

A run is a sequence of rounds over one :class:`~fedge.transport.base.Transport`; the
engine samples, configures, hands the cohort to the transport, reduces what comes back and
steps the strategy. The transport decides only where clients run.
"""

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

__all__ = [
    "Callback",
    "EvalPlan",
    "Evaluator",
    "RoundPlan",
    "RoundPolicy",
    "RunResult",
    "StopRun",
    "check_pipeline",
    "round_rng",
    "run",
    "run_round",
    "worst_mean",
]
