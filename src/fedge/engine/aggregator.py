"""Validation and reduction: what the server does with each update that arrives.

The engine builds one :class:`Aggregator` per run (strategy, pipeline, validator, influence
bound) and, each round, the :class:`Reducer` it hands to the transport. A transport (or
its execution backend) yields, for each selected client, one of:

* :class:`~fedge.core.types.ClientUpdate` — one client's (pipeline-encoded) update;
* :class:`PartialSum` — several clients' contributions already summed where they ran
  (a worker process, a Ray actor, a relay), through the picklable :class:`Reducer`; a relay
  under secure aggregation sends its sum only masked (``masked_by``), into the round's session;
* :class:`ClientFailure` — a client that was selected but delivered nothing usable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedge.core.errors import ValidationError
from fedge.core.params import ParamSpec, all_finite, l2_norm
from fedge.core.types import ClientUpdate, Metrics
from fedge.pipeline import Pipeline, RoundContext
from fedge.strategies.aggregate import Terms
from fedge.strategies.base import Strategy
from fedge.strategies.influence import InfluenceBound

BLOCK_KEY = "block"
"""The payload entry of a participant that stands for several clients (a relay's block of client
ids): a :class:`~fedge.transport.exchange.CohortSum` counts it as that many clients."""


@dataclass
class ClientFailure:
    client_id: int
    stage: str
    reason: str


@dataclass
class PartialSum:
    """Summed contributions of ``client_ids``, with their per-client metrics for the history."""

    terms: Terms
    client_ids: list[int]
    num_examples: int
    metrics: list[Metrics] = field(default_factory=list)
    uplink_bytes: int = 0
    failures: list[ClientFailure] = field(default_factory=list)
    relay: dict[str, Any] | None = None
    """What the round's record notes of the relay that sent this sum (``extra["relay_sums"]``, by
    node id: its name, block, children and push bytes); None for a sum made in this process."""
    masked_by: int | None = None
    """The participant id whose masked input in the round's secure aggregation holds these terms
    (a relay under a parent with ``[secagg]``; ``terms`` is then empty); None: the terms are here."""

    def participant(self) -> ClientUpdate:
        """A masked sum as the one participant it is in the round's session: no delta, its examples,
        and its block of client ids (:data:`BLOCK_KEY`), which it counts for."""
        assert self.masked_by is not None
        return ClientUpdate(
            client_id=self.masked_by,
            delta=[],
            num_examples=self.num_examples,
            payload={BLOCK_KEY: list(self.client_ids)},
        )


@dataclass
class Validator:
    """Server-side checks every update passes before it counts: shapes, finiteness, norm."""

    spec: ParamSpec
    max_norm: float | None = None
    expected: Callable[[ParamSpec, int], ParamSpec] | None = None
    """The shapes a given client's delta must have (a strategy's ``update_spec``); default ``spec``."""

    def check(self, update: ClientUpdate) -> None:
        spec = self.spec if self.expected is None else self.expected(self.spec, update.client_id)
        spec.check(update.delta, what=f"update from client {update.client_id}")
        if not all_finite(update.delta):
            raise ValidationError(f"update from client {update.client_id} has NaN or Inf values")
        if update.num_examples < 0:
            raise ValidationError(f"client {update.client_id} reports {update.num_examples} examples")
        if self.max_norm is not None:
            norm = l2_norm(update.delta)
            if norm > self.max_norm:
                raise ValidationError(
                    f"update from client {update.client_id} has norm {norm:.4g} > bound {self.max_norm:.4g}"
                )


@dataclass
class Reducer:
    """Server-side handling of one arriving update: pipeline undo, validation, contribution.

    Picklable, so execution backends can run it where the clients ran and send back one
    partial sum instead of every update.
    """

    strategy: Strategy
    pipeline: Pipeline
    rctx: RoundContext
    validator: Validator
    bound: InfluenceBound | None = None
    """Caps each update's weight and norm relative to recent updates (deployed runs)."""

    def __call__(self, update: ClientUpdate) -> Terms:
        return self.contribute(self.decode(update))

    def decode(self, update: ClientUpdate) -> ClientUpdate:
        """Undo the pipeline and validate; the update joins the influence bound's window."""
        update = self.pipeline.server(update, self.rctx)
        self.validator.check(update)
        if self.bound is not None:
            self.bound.observe(update)
        return update

    def contribute(self, update: ClientUpdate) -> Terms:
        """A decoded update's terms, after the influence bound (a transport may hold updates in between)."""
        if self.bound is not None:
            update = self.bound.apply(update, self.rctx.info)
        return self.strategy.contribution(update)


@dataclass
class Aggregator:
    """A run's validation and reduction, built once by the engine; it makes each round's :class:`Reducer`.

    ``bound`` is the influence bound of a served run (its window is part of the
    :class:`~fedge.engine.state.RoundState`); simulations run without one.
    """

    strategy: Strategy
    pipeline: Pipeline
    validator: Validator
    bound: InfluenceBound | None = None

    @classmethod
    def for_run(
        cls,
        strategy: Strategy,
        pipeline: Pipeline,
        spec: ParamSpec,
        *,
        max_update_norm: float | None = None,
        bound: InfluenceBound | None = None,
    ) -> Aggregator:
        """The aggregator of a run whose global model has shapes ``spec``."""
        expected = strategy.update_spec if strategy.partial_updates else None
        return cls(strategy, pipeline, Validator(spec, max_norm=max_update_norm, expected=expected), bound)

    def reducer(self, rctx: RoundContext, cohort: int) -> Reducer:
        """The round's reducer; the influence bound's medians are fixed for a cohort of ``cohort`` clients."""
        if self.bound is not None:
            self.bound.start_round(cohort)
        return Reducer(self.strategy, self.pipeline, rctx, self.validator, self.bound)
