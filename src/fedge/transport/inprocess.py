"""The in-process transport: clients live in this process (simulation and tests).

Clients are built lazily by ``client_fn(cid)`` and their persistent state (SCAFFOLD
control variates, error-feedback residuals) is kept here between rounds, keyed by id.
How the cohort is executed is the :class:`Backend`'s business, chosen by argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fedge.clients.base import Client, run_fit
from fedge.core.errors import ClientError
from fedge.core.params import Params
from fedge.core.types import ClientContext, EvalResult, FitInstructions, client_rng
from fedge.engine.aggregator import ClientFailure, Reducer
from fedge.pipeline import Pipeline
from fedge.strategies.base import Strategy
from fedge.transport.base import FitResult
from fedge.transport.exchange import Exchanged, OnReply, answer_all, responder_for

ClientFn = Callable[[int], Client]


class ClientRuntime:
    """Everything needed to run any client's side of a round: the app, not the data."""

    def __init__(self, client_fn: ClientFn, strategy: Strategy, pipeline: Pipeline, seed: int) -> None:
        self.client_fn = client_fn
        self.strategy = strategy
        self.pipeline = pipeline
        self.seed = seed

    def context(self, cid: int, round_num: int, state: dict[str, Any]) -> ClientContext:
        return ClientContext(client_id=cid, round_num=round_num, rng=client_rng(self.seed, round_num, cid), state=state)

    def fit(self, cid: int, params: Params, ins: FitInstructions, state: dict[str, Any]) -> Any:
        ctx = self.context(cid, ins.round_num, state)
        return run_fit(self.client_fn(cid), params, ins, ctx, strategy=self.strategy, pipeline=self.pipeline)

    def evaluate(self, cid: int, params: Params, round_num: int = 0, state: dict[str, Any] | None = None) -> EvalResult:
        """The strategy's evaluation of ``params`` on client ``cid`` (with its personal model when it keeps one)."""
        ctx = ClientContext(
            client_id=cid, round_num=round_num, rng=client_rng(self.seed, round_num, cid, 1), state=state or {}
        )
        return self.strategy.client_evaluate(self.client_fn(cid), params, ctx)


@dataclass
class FitTask:
    """One round's training, as the transport hands it to a :class:`Backend`.

    ``states`` are the clients' persistent states, keyed by id (a backend updates them in
    place or merges back what its workers return); ``reducer`` is the engine's
    (:class:`~fedge.engine.aggregator.Reducer`): a backend that runs clients elsewhere
    applies it there and yields one ``PartialSum``; None means yield every update.
    """

    runtime: ClientRuntime
    round_num: int
    client_ids: Sequence[int]
    params: Params
    ins: FitInstructions
    states: dict[int, dict[str, Any]]
    reducer: Reducer | None = None


class Backend(Protocol):
    """Executes a cohort's local training; chosen by name, never by a global switch."""

    name: str

    def fit(self, task: FitTask) -> Iterator[FitResult]: ...

    def close(self) -> None: ...


class DebugBackend:
    """One client at a time in this process; any error is re-raised naming client, round, stage."""

    name = "debug"

    def fit(self, task: FitTask) -> Iterator[FitResult]:
        for cid in task.client_ids:
            try:
                result = task.runtime.fit(cid, task.params, task.ins, task.states.setdefault(cid, {}))
            except Exception as exc:
                result = self.failed(cid, task.round_num, exc)
            yield result

    def failed(self, cid: int, round_num: int, exc: Exception) -> ClientFailure:
        if isinstance(exc, ClientError):
            raise exc
        raise ClientError(cid, round_num, "fit", exc) from exc

    def close(self) -> None:
        pass


class SequentialBackend(DebugBackend):
    """One client at a time; a failing client is reported and the round goes on."""

    name = "sequential"

    def failed(self, cid: int, round_num: int, exc: Exception) -> ClientFailure:
        return ClientFailure(cid, "fit", f"{type(exc).__name__}: {exc}")


class InProcessTransport:
    """A :class:`~fedge.transport.base.Transport` over clients built in this process."""

    def __init__(
        self,
        client_fn: ClientFn,
        num_clients: int,
        *,
        strategy: Strategy,
        pipeline: Pipeline | None = None,
        seed: int = 0,
        backend: Backend | None = None,
    ) -> None:
        self.runtime = ClientRuntime(client_fn, strategy, pipeline if pipeline is not None else Pipeline(), seed)
        self._num_clients = num_clients
        self.backend: Backend = backend or DebugBackend()
        self.states: dict[int, dict[str, Any]] = {}

    def num_clients(self) -> int:
        return self._num_clients

    def available(self, round_num: int) -> list[int]:
        return list(range(self._num_clients))

    def fit(
        self,
        round_num: int,
        client_ids: Sequence[int],
        params: Params,
        ins: FitInstructions,
        reducer: Reducer | None = None,
    ) -> Iterator[FitResult]:
        return self.backend.fit(FitTask(self.runtime, round_num, client_ids, params, ins, self.states, reducer))

    def evaluate(
        self, round_num: int, client_ids: Sequence[int], params: Params
    ) -> Iterator[EvalResult | ClientFailure]:
        for cid in client_ids:
            try:
                yield self.runtime.evaluate(cid, params, round_num, self.states.get(cid))
            except Exception as exc:
                yield ClientFailure(cid, "evaluate", f"{type(exc).__name__}: {exc}")

    def exchange(
        self,
        round_num: int,
        stage: str,
        requests: Mapping[int, Any],
        deadline_s: float,
        *,
        on_reply: OnReply | None = None,
    ) -> Exchanged:
        """Each client answers at once, here: the pipeline's responder for ``stage`` with the
        client's persistent state; a client whose answer raises is lost with the reason.
        ``deadline_s`` does not apply (no answer is late in process)."""
        responder = responder_for(stage, self.runtime.pipeline.transforms)

        def answer(cid: int, request: Any) -> Any:
            if responder is None:
                raise LookupError(f"no transform of the pipeline answers stage {stage!r}")
            return responder.respond(stage, request, client_id=cid, state=self.states.setdefault(cid, {}))

        return answer_all(stage, requests, answer, on_reply)

    def close(self) -> None:
        self.backend.close()


BACKENDS: dict[str, Callable[[], Backend]] = {
    "debug": DebugBackend,
    "sequential": SequentialBackend,
}
