"""The transport seam: the only way the round loop reaches clients.

The in-process transport runs clients in this machine (simulation and tests); the gRPC
transport reaches real devices. The loop, strategies and clients do not change between
them.

``fit`` yields results as they arrive: a :class:`ClientUpdate`, a
:class:`~fedge.engine.aggregator.PartialSum` reduced where clients ran through the
:class:`~fedge.engine.aggregator.Reducer` the engine handed over, or a
:class:`~fedge.engine.aggregator.ClientFailure`. Validation and reduction are the engine's
(:mod:`fedge.engine.aggregator`); a transport only moves messages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from fedge.core.params import Params
from fedge.core.types import ClientUpdate, EvalResult, FitInstructions
from fedge.engine.aggregator import ClientFailure, PartialSum, Reducer
from fedge.transport.exchange import Exchanged, OnReply

FitResult = ClientUpdate | PartialSum | ClientFailure


class Arrival(NamedTuple):
    """One dispatched client's result, with the model version its task was stamped with."""

    result: ClientUpdate | ClientFailure
    version: int


@runtime_checkable
class Dispatcher(Protocol):
    """A transport whose clients train in real time (deployed nodes), for an asynchronous run.

    ``dispatch`` sends clients a task stamped with the model ``version`` it carries and returns
    at once; ``arrival`` returns the results one by one in the order they really come back
    (a client that misses its deadline as a ``ClientFailure``), or None after ``timeout_s``.
    The in-process transport is no Dispatcher: there the virtual clock orders the arrivals.
    """

    def dispatch(
        self, round_num: int, client_ids: Sequence[int], params: Params, ins: FitInstructions, *, version: int
    ) -> None: ...

    def in_flight(self) -> int: ...

    def arrival(self, timeout_s: float) -> Arrival | None: ...


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
