"""The transport's generic exchange: one stage message to each selected client, answers back.

A multi-message protocol (secure aggregation's four stages today; asynchronous and
hierarchical rounds later) runs over :meth:`~fedge.transport.base.Transport.exchange`
and needs no transport path of its own:

* the server side sends ``requests`` (client id -> message) for one named ``stage`` and
  gets an :class:`Exchanged`: the replies by client id, and who was lost and why;
* the client side is a :class:`Responder` in the pipeline, ``respond(stage, request, ...)``
  with the client's persistent state; in process the transport calls it directly, on a
  device the node calls the same responder when the gRPC transport hands it the stage;
* a transform that sums the cohort itself through such a protocol is a :class:`CohortSum`:
  the round loop hands it the round's updates and the transport.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fedge.core.types import ClientUpdate
from fedge.pipeline import RoundContext
from fedge.strategies.aggregate import Terms

OnReply = Callable[[int, Any], None]
"""``on_reply(client_id, reply)``: takes each reply as it arrives (it is then not kept)."""


@dataclass
class Exchanged:
    """What one stage brought back."""

    replies: dict[int, Any] = field(default_factory=dict)
    """Each answering client's reply (empty for the replies an ``on_reply`` took)."""
    lost: dict[str, list[int]] = field(default_factory=dict)
    """Clients that sent nothing usable: reason -> ids."""
    nbytes: dict[int, int] = field(default_factory=dict)
    """Bytes each client's reply cost on the wire."""
    seconds: dict[int, float] = field(default_factory=dict)
    """Wall seconds each client spent answering, where the transport can measure them (in process)."""
    cpu_seconds: dict[int, float] = field(default_factory=dict)

    def lose(self, reason: str, cid: int) -> None:
        self.lost.setdefault(reason, []).append(cid)


@runtime_checkable
class Exchanger(Protocol):
    """The part of a transport a protocol needs: send one stage, gather the answers."""

    def exchange(
        self,
        round_num: int,
        stage: str,
        requests: Mapping[int, Any],
        deadline_s: float,
        *,
        on_reply: OnReply | None = None,
    ) -> Exchanged: ...


@runtime_checkable
class Responder(Protocol):
    """The client side of an exchange: answers the stages it names from the client's own state."""

    stages: tuple[str, ...]

    def respond(self, stage: str, request: Any, *, client_id: int, state: dict[str, Any]) -> Any:
        """The reply to ``request``; raising withdraws the client from the stage."""
        ...


@runtime_checkable
class CohortSum(Protocol):
    """A transform that sums the round's cohort itself (secure aggregation) over the transport."""

    name: str

    def sum_cohort(
        self,
        updates: list[ClientUpdate],
        rctx: RoundContext,
        transport: Exchanger,
        *,
        factors: Mapping[int, float] | None = None,
    ) -> tuple[Terms, int, dict[str, list[int]]]:
        """The summed terms, how many clients they hold, and who was lost (reason -> ids).

        ``factors[cid]`` scales that client's terms inside the sum (an asynchronous buffer's
        staleness weights), applied where the terms are, on the client."""
        ...


def responder_for(stage: str, transforms: Any) -> Responder | None:
    """The first of ``transforms`` that answers ``stage``."""
    return next((t for t in transforms if isinstance(t, Responder) and stage in t.stages), None)


def answer_all(
    stage: str,
    requests: Mapping[int, Any],
    answer: Callable[[int, Any], Any],
    on_reply: OnReply | None = None,
) -> Exchanged:
    """Ask each client in turn, in this process: a client whose ``answer`` raises is lost with the reason."""
    out = Exchanged()
    for cid in sorted(requests):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            reply = answer(cid, requests[cid])
        except Exception as exc:
            out.lose(f"{type(exc).__name__}: {exc}", cid)
            continue
        finally:
            out.seconds[cid] = time.perf_counter() - t0
            out.cpu_seconds[cid] = time.process_time() - c0
        size = getattr(reply, "nbytes", None)
        out.nbytes[cid] = int(size()) if callable(size) else 0
        if on_reply is not None:
            on_reply(cid, reply)
        else:
            out.replies[cid] = reply
    return out


__all__ = ["CohortSum", "Exchanged", "Exchanger", "OnReply", "Responder", "answer_all", "responder_for"]
