"""Fast execution backends for simulation: ``vectorized``, ``processes``, ``ray`` and ``auto``.

Its :data:`HOOKS` give :mod:`fedge.plugins` these backends (next to ``debug`` and
``sequential`` in :data:`fedge.transport.inprocess.BACKENDS`) and the ``[engine]`` config
section with their options, and a callback that copies a backend's ``round_info`` (the
vectorized backend's padding, the auto backend's pick) into each round's record. Every
backend yields the same global model for the same seed; see ``docs/engine.md`` for how each
one runs a cohort.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedge.config.schema import opt
from fedge.engine import Callback
from fedge.plugins import Hooks
from fedge.simulation.backends.auto import AutoBackend
from fedge.simulation.backends.processes import ProcessesBackend
from fedge.simulation.backends.ray_backend import RayBackend
from fedge.simulation.backends.vectorized import VectorizedBackend

if TYPE_CHECKING:
    from fedge.config.schema import Experiment
    from fedge.federation import Federation
    from fedge.simulation.history import RoundRecord
    from fedge.strategies.base import StrategyState


@dataclass
class EngineConfig:
    workers: int = opt(0, "processes/ray: worker processes or actors (0 = the CPU count)", min=0)
    ray_address: str = opt("", "ray: address of a running cluster, host:port ('' = start a local one)")
    ray_connect_timeout_s: float = opt(
        15.0, "ray: give up on an address that does not answer after this", min=0, exclusive_min=True
    )
    worker_timeout_s: float = opt(
        0.0,
        "processes/ray: a worker still busy after this many seconds of a "
        "round is stopped and its clients count as lost (0 = no limit)",
        min=0,
    )
    vectorized_chunk: int = opt(2048, "vectorized: clients trained together in one batched pass", min=1)


class RoundInfo(Callback):
    """Adds the backend's ``round_info`` of the round just run to the round's ``record.extra``."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def on_round_state(self, record: RoundRecord, state: Any) -> None:
        record.extra.update(self.backend.round_info)

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        pass


def configure_backend(exp: Experiment, built: Federation) -> Sequence[Callback]:
    """Hand the ``[engine]`` options to the run's backend before the first round, and report its
    per-round figures in the records."""
    backend: Any = built.transport.backend
    if hasattr(backend, "configure"):
        backend.configure(exp.section("engine"))
    return [RoundInfo(backend)] if hasattr(backend, "round_info") else []


HOOKS = Hooks(
    sections={"engine": EngineConfig},
    backends={
        "vectorized": VectorizedBackend,
        "processes": ProcessesBackend,
        "ray": RayBackend,
        "auto": AutoBackend,
    },
    callbacks=[configure_backend],
)

__all__ = ["HOOKS", "AutoBackend", "EngineConfig", "ProcessesBackend", "RayBackend", "VectorizedBackend"]
