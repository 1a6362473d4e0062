"""Fast execution backends for simulation: ``vectorized``, ``processes`` and ``ray``.

Importing this package registers them in :data:`fedge.transport.inprocess.BACKENDS`
(next to ``debug`` and ``sequential``) and adds the ``[engine]`` config section with
their options. Every backend yields the same global model for the same seed; see
``docs/engine.md`` for how each one runs a cohort.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedge.config.schema import opt, register_section
from fedge.simulation.backends.processes import ProcessesBackend
from fedge.simulation.backends.ray_backend import RayBackend
from fedge.simulation.backends.vectorized import VectorizedBackend
from fedge.transport.inprocess import BACKENDS

if TYPE_CHECKING:
    from fedge.config.schema import Experiment
    from fedge.engine import Callback
    from fedge.experiment import Built


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


def configure_backend(exp: Experiment, built: Built) -> Sequence[Callback]:
    """Hand the ``[engine]`` options to the run's backend before the first round."""
    backend: Any = built.transport.backend
    if hasattr(backend, "configure"):
        backend.configure(exp.section("engine"))
    return []


def _register() -> None:
    from fedge import experiment

    register_section("engine", EngineConfig)
    BACKENDS["vectorized"] = VectorizedBackend
    BACKENDS["processes"] = ProcessesBackend
    BACKENDS["ray"] = RayBackend
    if configure_backend not in experiment.CALLBACK_FACTORIES:
        experiment.CALLBACK_FACTORIES.append(configure_backend)


_register()

__all__ = ["EngineConfig", "ProcessesBackend", "RayBackend", "VectorizedBackend"]
