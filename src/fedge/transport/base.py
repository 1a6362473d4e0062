"""The transport seam: the only way the round loop reaches clients.

The in-process transport runs clients in this machine (simulation and tests); the gRPC
transport reaches real devices. The loop, strategies and clients do not change between
them.

``fit`` yields results as they arrive, one of:

* :class:`ClientUpdate` — one client's (pipeline-encoded) update;
* :class:`PartialSum` — several clients' contributions already summed where they ran
  (a worker process, a Ray actor), through the :class:`Reducer` the loop handed over;
* :class:`ClientFailure` — a client that was selected but delivered nothing usable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fedge.core.errors import ValidationError
from fedge.core.params import Params, ParamSpec, all_finite, l2_norm
from fedge.core.types import ClientUpdate, EvalResult, FitInstructions, Metrics
from fedge.pipeline import Pipeline, RoundContext
from fedge.strategies.aggregate import Terms
from fedge.strategies.base import Strategy
from fedge.strategies.influence import InfluenceBound
from fedge.transport.exchange import Exchanged, OnReply


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


FitResult = ClientUpdate | PartialSum | ClientFailure


@runtime_checkable
class Transport(Protocol):
    def num_clients(self) -> int:
        """The population size (clients known to this transport)."""
        ...

    def available(self, round_num: int) -> list[int]:
        """Ids of clients that can be selected in this round."""
        ...

    def fit(
        self,
        round_num: int,
        client_ids: Sequence[int],
        params: Params,
        ins: FitInstructions,
        reducer: Reducer | None = None,
    ) -> Iterator[FitResult]: ...

    def evaluate(
        self, round_num: int, client_ids: Sequence[int], params: Params
    ) -> Iterator[EvalResult | ClientFailure]: ...

    def exchange(
        self,
        round_num: int,
        stage: str,
        requests: Mapping[int, Any],
        deadline_s: float,
        *,
        on_reply: OnReply | None = None,
    ) -> Exchanged:
        """Send each client in ``requests`` its ``stage`` message; gather the replies until all
        answered, a client is lost, or ``deadline_s`` (see :mod:`fedge.transport.exchange`)."""
        ...

    def close(self) -> None: ...
