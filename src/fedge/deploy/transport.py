"""The gRPC transport: the round loop's :class:`~fedge.transport.base.Transport` over nodes.

``available`` waits (bounded) until enough nodes are connected; ``fit`` opens the round's
task, then yields each update as its node pushes it — reduced on arrival through the
loop's :class:`~fedge.engine.aggregator.Reducer` into a one-client
:class:`~fedge.engine.aggregator.PartialSum`, so the verdict can be returned to the node and
the server never holds more than a few updates — or a :class:`ClientFailure` when a node
disconnects, is refused, or misses the round deadline. ``evaluate`` asks nodes to evaluate
the global model on their own test data (federated evaluation, as in simulation).
``exchange`` runs one stage of a multi-message protocol (secure aggregation's). Nodes hear of
each the moment it opens, on their Subscribe stream.

For an asynchronous run (:func:`fedge.engine.asynchronous.run_async`) the transport is also a
:class:`~fedge.transport.base.Dispatcher`: ``dispatch`` opens a task stamped with the model
version it carries and returns at once, ``arrival`` hands back each result in the order nodes
really push them, with the version stamp of its task, and a node that misses its task's
deadline (or disconnects) comes back as a :class:`ClientFailure`, which frees its slot.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedge.core.errors import FedgeError, TransportError, ValidationError
from fedge.core.params import Params, l2_norm
from fedge.core.types import ClientUpdate, EvalResult, FitInstructions
from fedge.deploy.classes import ModelClass
from fedge.deploy.service import FedgeService, Relayed, Result, RoundTask, _Verdict
from fedge.engine.aggregator import ClientFailure, PartialSum, Reducer
from fedge.transport.base import Arrival, FitResult
from fedge.transport.exchange import Exchanged, OnReply

log = logging.getLogger("fedge.deploy")
Classes = Callable[[Params, Sequence[int]], "list[ModelClass] | None"]
"""A round's model classes from the global model and the selected clients (None: one, the whole model)."""


class GrpcTransport:
    """A :class:`~fedge.transport.base.Transport` whose clients are remote nodes."""

    def __init__(
        self,
        service: FedgeService,
        *,
        wait_s: float = 300.0,
        round_deadline_s: float = 600.0,
        round_min_nodes: int = 1,
        secagg_stage_s: float = 60.0,
        classes: Classes | None = None,
    ) -> None:
        """``classes`` splits a round's clients by the part of the model each needs (a strategy with
        per-client models: :func:`fedge.deploy.classes.model_classes`); without it all get the whole model."""
        self.service = service
        self.classes = classes
        self.secagg_stage_s = secagg_stage_s
        self.round_min_nodes = round_min_nodes
        self._first = True
        self.wait_s = wait_s
        self.round_deadline_s = round_deadline_s
        self.stopping = threading.Event()
        self._setup: Any = None
        self._live: dict[str, _Dispatched] = {}
        """An asynchronous run's open dispatches, by task id."""
        self._lost: list[Arrival] = []

    def num_clients(self) -> int:
        return self.service.num_clients

    def available(self, round_num: int) -> list[int]:
        """Connected nodes' client ids, once enough are connected.

        The first round of this server process waits for the service's ``min_nodes`` (the
        fleet gathering, or rejoining after a resume), later rounds for ``round_min_nodes``.
        Waits at most ``wait_s``; then raises a :class:`TransportError` that says how many
        nodes are connected, how many are needed and which client ids are missing.
        """
        svc = self.service
        need = svc.min_nodes if self._first else self.round_min_nodes
        self._first = False
        start = time.monotonic()
        last_log = -1e9
        while True:
            ids = svc.connected()
            if len(ids) >= need:
                return ids
            # Only a real wait shows (an asynchronous run asks at every free slot, mid-training).
            svc.round_num, svc.phase = round_num, "waiting for nodes"
            now = time.monotonic()
            missing = sorted(set(svc.clients) - set(ids))
            msg = f"round {round_num}: {len(ids)} nodes connected, {need} needed (missing client ids {_short(missing)})"
            if self.stopping.is_set():
                raise TransportError(f"stopped while waiting for nodes; {msg}")
            if now - start >= self.wait_s:
                raise TransportError(f"gave up after {self.wait_s:.0f}s: {msg}")
            if now - last_log >= 5.0:
                log.info("event=waiting %s", msg)
                last_log = now
            time.sleep(0.05)

    def fit(
        self,
        round_num: int,
        client_ids: Sequence[int],
        params: Params,
        ins: FitInstructions,
        reducer: Reducer | None = None,
    ) -> Iterator[FitResult]:
        """Open the round and yield each update as it arrives (reduced, when there is a reducer).

        With an influence bound that has too few recent updates for its medians (the first
        round of this process), the first arrivals are decoded and held — at most
        ``min_reference - 1`` of them — and reduced once enough are in or the round ends.
        """
        svc = self.service
        task = svc.open_round(round_num, client_ids, params, ins, self._split(params, client_ids))
        bound = None if reducer is None else reducer.bound
        held: list[_Held] = []
        try:
            pending = set(task.client_ids)
            for update, verdict in self._arrivals(task, "fit", pending):
                if isinstance(update, Relayed):
                    assert verdict is not None
                    yield from _relayed(update, verdict, reducer)
                    continue
                if verdict is None or isinstance(update, ClientFailure) or reducer is None:
                    if verdict is not None:
                        verdict.set(True)
                    assert not isinstance(update, EvalResult)
                    yield update
                    continue
                assert isinstance(update, ClientUpdate)
                cid = update.client_id
                metrics = {
                    **update.metrics,
                    "num_examples": float(update.num_examples),
                    "uplink_bytes": float(update.uplink_bytes),
                }
                try:
                    decoded = reducer.decode(update)
                except FedgeError as exc:
                    verdict.set(False, str(exc))
                    yield ClientFailure(cid, "rejected", str(exc))
                    continue
                held.append(_Held(decoded, verdict, metrics, update.uplink_bytes))
                del update, decoded
                if bound is None or bound.ready or not pending:
                    yield from _reduce(reducer, held)
            if reducer is not None:
                yield from _reduce(reducer, held)
        finally:
            svc.close_round(task)

    def _arrivals(
        self, task: RoundTask, what: str, pending: set[int] | None = None
    ) -> Iterator[tuple[Result, _Verdict | None]]:
        """Each selected node's result as it arrives (with the verdict its node waits on), and a
        :class:`ClientFailure` (verdict None) for a node that disconnects or misses the deadline.

        ``pending`` (the task's clients, by default) loses each client as its result is yielded."""
        svc = self.service
        pending = set(task.client_ids) if pending is None else pending
        deadline = time.monotonic() + self.round_deadline_s
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                for cid in sorted(pending):
                    yield ClientFailure(cid, what, f"missed the {self.round_deadline_s:.0f}s round deadline"), None
                pending.clear()
                return
            try:
                result, verdict = task.results.get(timeout=min(0.1, left))
            except queue.Empty:
                live = set(svc.connected())
                for cid in sorted(pending - live - task.done):
                    pending.discard(cid)
                    log.warning("event=node_lost round=%d client=%d", task.round_num, cid)
                    yield ClientFailure(cid, what, "node disconnected"), None
                continue
            if isinstance(result, Relayed):
                pending -= result.covers
            else:
                pending.discard(result.client_id)
            yield result, verdict

    def exchange(
        self,
        round_num: int,
        stage: str,
        requests: Mapping[int, Any],
        deadline_s: float,
        *,
        on_reply: OnReply | None = None,
    ) -> Exchanged:
        """One stage of a multi-message protocol with the nodes in ``requests``.

        Each node gets its request (packed with :mod:`fedge.secagg.wire`) on its next poll;
        the answers, checked and decoded by the service, are gathered until all are in, a
        node disconnects, or the deadline — ``deadline_s`` or ``secagg_stage_s``, whichever
        is sooner. The round's byte limits come from its
        :class:`~fedge.secagg.messages.RoundSetup`, the request of its first stage.
        """
        from fedge.secagg import wire as secagg_wire
        from fedge.secagg.messages import RoundSetup

        svc = self.service
        first = next(iter(requests.values()), None)
        if isinstance(first, RoundSetup):
            self._setup = first
        elif self._setup is None or self._setup.round_num != round_num:
            raise TransportError(f"round {round_num}: stage {stage!r} before the round's setup was sent")
        limit = min(deadline_s, self.secagg_stage_s)
        out = Exchanged()
        packed = {cid: secagg_wire.pack(m) for cid, m in requests.items()}
        sa = svc.open_secagg(self._setup)
        try:
            svc.secagg_stage(sa, stage, packed)
            pending = set(packed)
            deadline = time.monotonic() + limit
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    for cid in sorted(pending):
                        out.lose(f"missed the {limit:g}s stage deadline", cid)
                    break
                try:
                    cid, msg = sa.inbox.get(timeout=min(0.1, left))
                except queue.Empty:
                    dead = pending - set(svc.connected())
                    for cid in sorted(dead):
                        out.lose("node disconnected", cid)
                    pending -= dead
                    continue
                if cid not in pending:
                    continue
                pending.discard(cid)
                if msg is None:
                    out.lose("withdrew or sent a malformed message", cid)
                elif on_reply is not None:
                    on_reply(cid, msg)
                else:
                    out.replies[cid] = msg
        finally:
            svc.close_secagg(sa)
        out.nbytes = dict(sa.received_bytes)
        return out

    def evaluate(
        self, round_num: int, client_ids: Sequence[int], params: Params
    ) -> Iterator[EvalResult | ClientFailure]:
        """Federated evaluation: each node evaluates ``params`` (with its personal model, when its
        strategy keeps one) on its own test data; a node that fails, leaves or misses the round
        deadline is a :class:`ClientFailure`."""
        task = self.service.open_eval(round_num, client_ids, params, self._split(params, client_ids))
        try:
            for result, verdict in self._arrivals(task, "evaluate"):
                if verdict is not None:
                    verdict.set(True)
                if isinstance(result, Relayed):  # a relay's evaluation over its children, or its failure
                    if isinstance(result.result, ClientFailure):
                        yield from (ClientFailure(c, "evaluate", result.result.reason) for c in sorted(result.covers))
                    elif isinstance(result.result, EvalResult):
                        yield result.result
                    continue
                if isinstance(result, ClientUpdate):  # cannot happen: an evaluate task's pushes decode as evaluations
                    continue
                yield result
        finally:
            self.service.close_round(task)

    def dispatch(
        self, round_num: int, client_ids: Sequence[int], params: Params, ins: FitInstructions, *, version: int
    ) -> None:
        """Send ``client_ids`` a training task stamped with ``version``; their results come from :meth:`arrival`."""
        task = self.service.open_round(
            round_num, client_ids, params, ins, self._split(params, client_ids), version=version
        )
        self._live[task.task_id] = _Dispatched(task, set(task.client_ids), time.monotonic() + self.round_deadline_s)

    def in_flight(self) -> int:
        """Clients dispatched whose result has not come back."""
        return sum(len(d.pending) for d in self._live.values())

    def arrival(self, timeout_s: float) -> Arrival | None:
        """The next result of a dispatched client, in arrival order; None if none within ``timeout_s``.

        The node's Push is answered as soon as its result is taken here (accepted: received);
        what the engine then does with it (a stale drop, a rejection) is in the step's record.
        A client past its task's ``round_deadline_s``, or whose node disconnected, is a
        :class:`ClientFailure`: its slot is free again and a late Push is refused.
        """
        svc = self.service
        end = time.monotonic() + timeout_s
        while True:
            self._expire()
            if self._lost:
                return self._lost.pop(0)
            svc.arrived.clear()
            for d in list(self._live.values()):
                try:
                    result, verdict = d.task.results.get_nowait()
                except queue.Empty:
                    continue
                if isinstance(result, Relayed):  # FedBuff buffers single updates; a relay's sum has no staleness
                    d.pending -= result.covers
                    verdict.set(False, "an asynchronous run takes single updates, not a relay's partial sum")
                    for cid in sorted(result.covers):
                        self._lost.append(Arrival(ClientFailure(cid, "fit", "relay sum refused by [async]"), 0))
                    if not d.pending:
                        self._close(d)
                    continue
                d.pending.discard(result.client_id)
                if not d.pending:
                    self._close(d)
                verdict.set(True)
                assert not isinstance(result, EvalResult)
                return Arrival(result, d.task.version or 0)
            left = end - time.monotonic()
            if left <= 0:
                return None
            svc.arrived.wait(min(0.1, left))

    def _expire(self) -> None:
        """Fail the dispatched clients that are past their deadline or whose node is gone."""
        if not self._live:
            return
        now, live = time.monotonic(), set(self.service.connected())
        for d in list(self._live.values()):
            late = now >= d.deadline
            for cid in sorted(d.pending):
                if late or (cid not in live and cid not in d.task.done):
                    why = f"missed the {self.round_deadline_s:g}s round deadline" if late else "node disconnected"
                    log.warning("event=node_lost round=%d client=%d reason=%r", d.task.round_num, cid, why)
                    self._lost.append(Arrival(ClientFailure(cid, "fit", why), d.task.version or 0))
                    d.pending.discard(cid)
            if not d.pending:
                self._close(d)

    def _close(self, d: _Dispatched) -> None:
        self._live.pop(d.task.task_id, None)
        self.service.close_round(d.task)

    def _split(self, params: Params, client_ids: Sequence[int]) -> list[ModelClass] | None:
        return None if self.classes is None else self.classes(params, client_ids)

    def close(self) -> None:
        """No more rounds from this process: nodes are told the run is over, unless it is stopping to be
        resumed (``stopping``, a graceful stop), when they keep waiting for the server to come back."""
        for d in list(self._live.values()):
            self._close(d)
        if not self.stopping.is_set():
            self.service.finish()


@dataclass
class _Dispatched:
    """One open dispatch of an asynchronous run: its task, who has not answered, its deadline."""

    task: RoundTask
    pending: set[int]
    deadline: float


@dataclass
class _Held:
    """A decoded update waiting to be reduced, with the verdict its node is waiting on."""

    update: ClientUpdate
    verdict: _Verdict
    metrics: dict[str, float]
    uplink_bytes: int


def _relayed(got: Relayed, verdict: _Verdict, reducer: Reducer | None) -> Iterator[FitResult]:
    """A relay's push: its partial sum, once checked against the round (:func:`check_partial`), or a
    failure for each selected client id it answers for. A masked sum (a round under secure
    aggregation, which has no reducer) has no terms to check: its input joins the round's session."""
    item = got.result
    if isinstance(item, ClientFailure):
        verdict.set(True)
        yield from (ClientFailure(c, item.stage, f"relay: {item.reason}") for c in sorted(got.covers))
        return
    assert isinstance(item, PartialSum)
    try:
        if item.masked_by is not None and reducer is not None:
            raise ValidationError("a masked partial sum in a round without secure aggregation")
        if item.masked_by is None and reducer is None:
            raise ValidationError(
                "this round needs every client's own update (a strategy that needs individual updates), or "
                "the relay's sum masked in its secure aggregation, not in clear"
            )
        if reducer is not None:
            check_partial(item, reducer)
    except FedgeError as exc:
        verdict.set(False, str(exc))
        yield from (ClientFailure(c, "rejected", str(exc)) for c in sorted(got.covers))
        return
    verdict.set(True)
    lost = got.covers - set(item.client_ids) - {f.client_id for f in item.failures}
    item.failures += [ClientFailure(c, "fit", "the relay sent nothing for it") for c in sorted(lost)]
    record_relay(got, item)
    yield item


def record_relay(got: Relayed, item: PartialSum) -> None:
    """Note on the sum which relay answered for which children and what its push cost, for the
    round's record (``extra["relay_sums"]``): a few numbers per relay, however many children it has."""
    ids = item.client_ids
    item.relay = {
        "node": got.node,
        "name": got.name,
        "first": got.block.start,
        "clients": len(got.block),
        "selected": len(got.covers),
        "children": len(ids),
        "first_child": min(ids, default=-1),
        "last_child": max(ids, default=-1),
        "wan_up_bytes": item.uplink_bytes,
    }


def check_partial(item: PartialSum, reducer: Reducer) -> None:
    """Check a relay's partial sum as the round would check its clients' updates.

    Its terms must be those this strategy sums for one update, with the same shapes, and
    finite; its ``weight`` term (when the strategy has one) non-negative and at most one
    per example it claims (or one per client, for a strategy that counts clients). The
    influence bound of single updates (a weight capped at a multiple of the median) does not
    apply to a sum: the allow-list's ``examples=M`` bounds what a relay may claim.
    """
    spec = reducer.validator.spec
    probe = ClientUpdate(client_id=-1, delta=[np.zeros(s, np.float32) for s in spec.shapes], num_examples=1)
    want = reducer.strategy.contribution(probe)
    who = f"partial sum of clients {item.client_ids[:8]}"
    if set(item.terms) != set(want):
        raise ValidationError(f"{who} has terms {sorted(item.terms)}, this round sums {sorted(want)}")
    for name, tensors in want.items():
        got = item.terms[name]
        if [np.shape(t) for t in got] != [np.shape(t) for t in tensors]:
            raise ValidationError(f"{who}: term {name!r} has the wrong shapes")
        if not all(np.isfinite(t).all() for t in got):
            raise ValidationError(f"{who}: term {name!r} has NaN or Inf values")
    if "weight" in want:
        w = float(item.terms["weight"][0].reshape(-1)[0])
        most = float(max(item.num_examples, len(item.client_ids)))
        # 1e-4 relative: a sum masked by secure aggregation comes back through fixed point.
        if not 0 <= w <= most * (1 + 1e-4) or math.isnan(w):
            raise ValidationError(f"{who} weighs {w:g}, more than its {most:g} examples allow")
    for dp in reducer.pipeline.named("central_dp"):
        check_private_partial(item, dp)


def check_private_partial(item: PartialSum, dp: Any) -> None:
    """Check a relay's partial sum under central DP at the top of the tree.

    Each child clips its own update to ``C`` (``clip_at = "client"``) and its relay clips it again
    before summing, so the sum of ``n`` children weighs exactly ``n`` (uniform weighting) and its
    delta's L2 norm is at most ``n C``: what this server checks. The noise is added once, here, to
    the round's sum, and the accountant counts the round as in a flat run (one child's clipped
    update moves the sum by at most ``C``, whichever relay carried it).
    """
    who = f"partial sum of clients {item.client_ids[:8]}"
    if dp.clip_at != "client":
        raise ValidationError(
            f"{who}: central DP with privacy.clip_at = 'server' clips each client's own update on this server, "
            "which a relay's sum skips; set privacy.clip_at = 'client' (children clip, their relay checks)"
        )
    if dp.adaptive is not None:
        raise ValidationError(
            f"{who}: privacy.adaptive_clip counts each client's clipping bit on this server, which a relay's sum skips"
        )
    n = len(item.client_ids)
    w = float(item.terms["weight"][0].reshape(-1)[0])
    if abs(w - n) > 1e-4 * max(n, 1):
        raise ValidationError(f"{who} weighs {w:g} under central DP, not one per client ({n})")
    norm = l2_norm(item.terms["delta"])
    if norm > n * dp.clip_norm * (1 + 1e-4):
        raise ValidationError(
            f"{who} has L2 norm {norm:.6g}, more than its {n} clipped updates allow ({n} x {dp.clip_norm:g})"
        )


def _reduce(reducer: Reducer, held: list[_Held]) -> Iterator[FitResult]:
    """Reduce the held updates in arrival order, answering each one's node."""
    while held:
        h = held.pop(0)
        cid = h.update.client_id
        try:
            terms = reducer.contribute(h.update)
        except FedgeError as exc:
            h.verdict.set(False, str(exc))
            yield ClientFailure(cid, "rejected", str(exc))
            continue
        h.verdict.set(True)
        n, metrics, up = h.update.num_examples, h.metrics, h.uplink_bytes
        del h
        yield PartialSum(terms, [cid], n, [metrics], up)


def _short(ids: list[int], n: int = 12) -> str:
    head = ", ".join(map(str, ids[:n]))
    return f"{head}, … ({len(ids)} in all)" if len(ids) > n else head or "none"
