"""The server's side of one secure aggregation round, over any transport's exchange.

:func:`run_round` is the one orchestrator: it sends each stage's messages through
:meth:`~fedge.transport.base.Transport.exchange` — in process (simulation: every client
answers with :func:`fedge.secagg.client.respond` and the real cryptography) or over gRPC
(each node answers with the same function) — and runs the :mod:`fedge.secagg.server`
stage functions on the answers. A client lost in a stage (silent past the deadline,
disconnected, withdrawn, or rejected by the server) counts as dropped there.

:func:`run_protocol` runs it over ring vectors held in this process, with dropouts
injected at any stage and a hook that alters messages in flight (tests of tampering and
bad input); per-client and server compute seconds and per-client bytes are measured for
the W3 benchmark.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.secagg import client as C
from fedge.secagg import server as S
from fedge.secagg.messages import STAGES, RoundSetup
from fedge.transport.exchange import Exchanged, Exchanger, OnReply, answer_all

log = logging.getLogger("fedge.secagg")

Tamper = Callable[[str, Any], Any]
"""``tamper(stage, message) -> message``: alters a client's message before the server sees it."""


@dataclass
class ProtocolResult:
    """The unmasked sum and what it cost."""

    total: npt.NDArray[Any]
    included: list[int]
    dropped: dict[str, list[int]] = field(default_factory=dict)
    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    client_cpu_seconds: dict[int, float] = field(default_factory=dict)
    server_cpu_seconds: float = 0.0
    client_bytes: dict[int, int] = field(default_factory=dict)


def run_round(
    setup: RoundSetup,
    transport: Exchanger,
    *,
    deadline_s: float = math.inf,
    drop: Mapping[str, set[int] | frozenset[int]] | None = None,
    factors: Mapping[int, float] | None = None,
) -> ProtocolResult:
    """One secure aggregation round over ``setup.cohort``, each stage one ``transport.exchange``.

    ``deadline_s`` bounds each stage's wait (a transport may bound it further).
    ``drop[stage]`` (simulation) are clients that vanish just before that stage: they are
    sent nothing more. ``factors[cid]`` goes to that client with its share inbox: it scales
    its input by it before masking (an asynchronous buffer's staleness weights; default 1).
    Raises :class:`~fedge.secagg.server.SecAggAbort` when too few clients remain.
    """
    drop = drop or {}
    unknown = set(drop) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; stages are {STAGES}")
    res = ProtocolResult(total=np.zeros(0), included=[])
    gone: set[int] = set()
    server = [0.0, 0.0]

    def lost(stage: str, ids: Iterable[int], reason: str) -> None:
        new = sorted(set(ids) - gone)
        if new:
            res.dropped.setdefault(f"{stage}: {reason}", []).extend(new)
            gone.update(new)

    def on_server(fn: Callable[..., Any], *args: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args)
        finally:
            server[0] += time.perf_counter() - t0
            server[1] += time.process_time() - c0

    def stage(name: str, requests: Mapping[int, Any], on_reply: OnReply | None = None) -> list[Any]:
        lost(name, set(drop.get(name, set())) & set(requests), "dropped")
        live = {cid: m for cid, m in requests.items() if cid not in gone}
        got = transport.exchange(setup.round_num, name, live, deadline_s, on_reply=on_reply)
        _count(res, got)
        for reason, ids in got.lost.items():
            lost(name, ids, reason)
        return [got.replies[cid] for cid in sorted(got.replies)]

    ads = stage("advertise", {cid: setup for cid in setup.cohort})
    roster, rejected = on_server(S.collect_keys, setup, ads)
    lost("advertise", rejected, "rejected")

    shares = stage("share", {cid: roster for cid in sorted(roster.keys)})
    shared = on_server(S.route_shares, setup, roster, shares)
    summed = on_server(S.MaskedSum, setup, shared)
    lost("share", shared.rejected, "rejected")
    lost("share", [c for c in setup.cohort if c not in shared.commitments], "rejected")

    def add(cid: int, msg: Any) -> None:
        if not on_server(summed.add, msg):
            lost("masked_input", [cid], f"rejected ({summed.rejected[cid]})")

    inboxes = {cid: shared.inboxes[cid] for cid in sorted(shared.commitments)}
    if factors:
        inboxes = {cid: replace(box, factor=float(factors.get(cid, 1.0))) for cid, box in inboxes.items()}
    stage("masked_input", inboxes, add)
    request = on_server(summed.request)
    responses = stage("unmask", {cid: request for cid in request.survivors})
    res.total = on_server(S.unmask, setup, roster, shared, summed, responses)
    res.server_seconds, res.server_cpu_seconds = server
    res.included = list(request.survivors)
    log.info(
        "event=secagg_done round=%d included=%d dropped=%d server_s=%.3f",
        setup.round_num,
        len(res.included),
        len(gone),
        res.server_seconds,
    )
    return res


def _count(res: ProtocolResult, got: Exchanged) -> None:
    for cid, n in got.nbytes.items():
        res.client_bytes[cid] = res.client_bytes.get(cid, 0) + n
    for cid, s in got.seconds.items():
        res.client_seconds[cid] = res.client_seconds.get(cid, 0.0) + s
    for cid, s in got.cpu_seconds.items():
        res.client_cpu_seconds[cid] = res.client_cpu_seconds.get(cid, 0.0) + s


class LocalClients:
    """An exchange over clients that are only their ring vectors, in this process.

    Each answers through :func:`fedge.secagg.client.respond`, exactly as an in-process
    transport's client or a node does; ``tamper`` alters each reply before the server sees it.
    A client's input is read from ``inputs`` only when it masks it (a lazy mapping can time
    the encoding as the client's work).
    """

    def __init__(self, setup: RoundSetup, inputs: Mapping[int, npt.NDArray[Any]], tamper: Tamper | None) -> None:
        self.round_num, self.inputs, self.tamper = setup.round_num, inputs, tamper
        self.states: dict[int, dict[str, Any]] = {}

    def exchange(
        self,
        round_num: int,
        stage: str,
        requests: Mapping[int, Any],
        deadline_s: float,
        *,
        on_reply: OnReply | None = None,
    ) -> Exchanged:
        def answer(cid: int, request: Any) -> Any:
            state = self.states.setdefault(cid, {})
            if stage == "advertise" and cid in self.inputs:
                C.hold_input(state, self.round_num, np.zeros(0, np.uint32))
            elif stage == "masked_input" and C.STATE_KEY in state:
                state[C.STATE_KEY]["words"] = self.inputs[cid]
            return C.respond(stage, request, client_id=cid, state=state)

        got = answer_all(stage, requests, answer)
        if self.tamper is not None:
            got.replies = {cid: self.tamper(stage, m) for cid, m in got.replies.items()}
        if on_reply is not None:
            for cid in sorted(got.replies):
                on_reply(cid, got.replies.pop(cid))
        return got


def run_protocol(
    setup: RoundSetup,
    inputs: Mapping[int, npt.NDArray[Any]],
    *,
    drop: Mapping[str, set[int] | frozenset[int]] | None = None,
    tamper: Tamper | None = None,
) -> ProtocolResult:
    """:func:`run_round` over ``inputs`` (the ring vectors) held in this process.

    A cohort member without an input withdraws when asked to advertise.
    """
    return run_round(setup, LocalClients(setup, inputs, tamper), drop=drop)
