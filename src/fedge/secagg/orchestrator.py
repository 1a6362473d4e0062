"""Runs the four stages for a cohort in one process: secure aggregation in simulation.

Every message between a client and the server goes through the stage functions of
:mod:`fedge.secagg.client` and :mod:`fedge.secagg.server` with the real cryptography;
only the wire is missing. Dropouts can be injected at any stage, and a hook can alter
messages in flight (tests of tampering and bad input). Per-client and server compute
seconds and per-client bytes are measured for the W3 benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import FedgeError
from fedge.secagg import client as C
from fedge.secagg import server as S
from fedge.secagg.messages import STAGES, RoundSetup

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


def run_protocol(
    setup: RoundSetup,
    inputs: Mapping[int, npt.NDArray[Any]],
    *,
    drop: Mapping[str, set[int] | frozenset[int]] | None = None,
    tamper: Tamper | None = None,
) -> ProtocolResult:
    """One secure aggregation round over ``setup.cohort``; ``inputs`` are the ring vectors.

    ``drop[stage]`` are clients that vanish just before sending that stage's message (a
    cohort member without an input drops before advertising). Raises
    :class:`~fedge.secagg.server.SecAggAbort` when too few clients remain.
    """
    drop = drop or {}
    unknown = set(drop) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; stages are {STAGES}")
    res = ProtocolResult(total=np.zeros(0), included=[])
    secs = res.client_seconds
    nbytes = res.client_bytes
    gone: set[int] = set()
    server = 0.0

    def lost(stage: str, ids: Iterable[int], reason: str = "dropped") -> None:
        new = sorted(set(ids) - gone)
        if new:
            res.dropped.setdefault(f"{stage}: {reason}", []).extend(new)
            gone.update(new)

    cpu = res.client_cpu_seconds
    server_cpu = 0.0

    def timed(cid: int, fn: Callable[..., Any], *args: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args)
        finally:
            secs[cid] = secs.get(cid, 0.0) + time.perf_counter() - t0
            cpu[cid] = cpu.get(cid, 0.0) + time.process_time() - c0

    def on_server(fn: Callable[..., Any], *args: Any) -> Any:
        nonlocal server, server_cpu
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args)
        finally:
            server += time.perf_counter() - t0
            server_cpu += time.process_time() - c0

    def send(stage: str, cid: int, msg: Any) -> Any:
        nbytes[cid] = nbytes.get(cid, 0) + msg.nbytes()
        return tamper(stage, msg) if tamper else msg

    def live(stage: str) -> list[int]:
        lost(stage, drop.get(stage, set()))
        return [c for c in setup.cohort if c not in gone]

    lost("advertise", [c for c in setup.cohort if c not in inputs], "no input")
    state: dict[int, C.ClientSecrets] = {}
    ads = []
    for cid in live("advertise"):
        state[cid], msg = timed(cid, C.advertise, setup, cid)
        ads.append(send("advertise", cid, msg))
    roster, rejected = on_server(S.collect_keys, setup, ads)
    lost("advertise", list(rejected), "rejected")

    shares = []
    for cid in live("share"):
        try:
            shares.append(send("share", cid, timed(cid, C.share_keys, state[cid], roster)))
        except FedgeError:
            lost("share", [cid], "refused")
    shared = on_server(S.route_shares, setup, roster, shares)
    summed = on_server(S.MaskedSum, setup, shared)
    lost("share", list(shared.rejected), "rejected")
    lost("share", [c for c in setup.cohort if c not in shared.commitments and c not in gone], "rejected")

    for cid in live("masked_input"):
        try:
            msg = timed(cid, C.masked_input, state[cid], shared.inboxes[cid], inputs[cid])
        except FedgeError as exc:
            lost("masked_input", [cid], f"refused ({exc})")
            continue
        msg = send("masked_input", cid, msg)
        ok = on_server(summed.add, msg)
        if not ok:
            lost("masked_input", [cid], f"rejected ({summed.rejected[cid]})")

    request = on_server(summed.request)
    responses = []
    for cid in live("unmask"):
        if cid in request.survivors:
            try:
                msg = timed(cid, C.unmask, state[cid], request)
            except FedgeError:
                continue
            responses.append(send("unmask", cid, msg))
    res.total = on_server(S.unmask, setup, roster, shared, summed, responses)
    res.server_seconds, res.server_cpu_seconds = server, server_cpu
    res.included = list(request.survivors)
    return res
