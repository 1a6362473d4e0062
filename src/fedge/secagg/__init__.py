"""Secure aggregation: the server learns only the sum of the cohort's updates.

Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning"
(CCS 2017) and its SecAgg+ refinement, Bell et al., "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead" (CCS 2020), with the real cryptography of the
``cryptography`` package. Layers, each usable alone:

* :mod:`~fedge.secagg.shamir`, :mod:`~fedge.secagg.fixedpoint`, :mod:`~fedge.secagg.crypto`
  — the maths and primitives;
* :mod:`~fedge.secagg.graph` — the SecAgg+ neighbour graph and safe ``(k, t)``;
* :mod:`~fedge.secagg.messages`, :mod:`~fedge.secagg.client`, :mod:`~fedge.secagg.server`
  — the protocol as serialisable messages and stage functions;
* :mod:`~fedge.secagg.wire` — those messages as bytes, without pickle;
* :mod:`~fedge.secagg.orchestrator` — runs the stages for a cohort over a transport's exchange;
* :mod:`~fedge.secagg.transform` — the pipeline transform and the ``[secagg]`` section.

Its :data:`HOOKS` give :mod:`fedge.plugins` the ``[secagg]`` section and the masking
transform, at the last stage on the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fedge.config.schema import Experiment
from fedge.core.errors import ConfigError
from fedge.pipeline import Transform
from fedge.plugins import Hooks, Stage
from fedge.secagg.client import ProtocolError
from fedge.secagg.graph import GraphParams, choose_parameters
from fedge.secagg.orchestrator import ProtocolResult, run_protocol
from fedge.secagg.server import SecAggAbort
from fedge.secagg.transform import SecAggConfig, SecureAggregation

if TYPE_CHECKING:
    from fedge.federation import BuildContext


def build_transforms(exp: Experiment, ctx: BuildContext | None = None) -> Sequence[Transform]:
    """The secagg transform when ``[secagg] enabled``; it must run last on the client."""
    if ctx is None:
        from fedge import federation

        ctx = federation.BuildContext.from_config(exp)
    cfg: SecAggConfig = exp.section("secagg")
    if not cfg.enabled:
        return []
    from fedge.federation import make_strategy

    comp = exp.extensions.get("compression")
    if comp is not None and getattr(comp, "codec", "none") != "none":
        raise ConfigError(
            f"compression.codec = {comp.codec!r} encodes updates before [secagg] could mask "
            "them; secagg's fixed-point encoding already quantises, so set codec = 'none'"
        )

    from fedge.engine.asynchronous import async_config

    # Under [async] one session sums one buffer (ctx.cohort is its size) of inputs held unencoded.
    buffered = async_config(exp) is not None
    return [SecureAggregation(cfg, make_strategy(exp), max_cohort=ctx.cohort, pending=buffered)]


HOOKS = Hooks(sections={"secagg": SecAggConfig}, transforms=[(Stage.MASK, build_transforms)])

__all__ = [
    "HOOKS",
    "GraphParams",
    "ProtocolError",
    "ProtocolResult",
    "SecAggAbort",
    "SecAggConfig",
    "SecureAggregation",
    "build_transforms",
    "choose_parameters",
    "run_protocol",
]
