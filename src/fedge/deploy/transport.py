"""The gRPC transport: the round loop's :class:`~fedge.transport.base.Transport` over nodes.

``available`` waits (bounded) until enough nodes are connected; ``fit`` opens the round's
task, then yields each update as its node pushes it — reduced on arrival through the
loop's :class:`~fedge.transport.base.Reducer` into a one-client
:class:`~fedge.transport.base.PartialSum`, so the verdict can be returned to the node and
the server never holds more than a few updates — or a :class:`ClientFailure` when a node
disconnects, is refused, or misses the round deadline.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence

from fedge.core.errors import FedgeError, TransportError
from fedge.core.params import Params
from fedge.core.types import EvalResult, FitInstructions
from fedge.deploy.service import FedgeService
from fedge.transport.base import ClientFailure, FitResult, PartialSum, Reducer

log = logging.getLogger("fedge.deploy")


class GrpcTransport:
    """A :class:`~fedge.transport.base.Transport` whose clients are remote nodes."""

    def __init__(self, service: FedgeService, *, wait_s: float = 300.0,
                 round_deadline_s: float = 600.0, round_min_nodes: int = 1) -> None:
        self.service = service
        self.round_min_nodes = round_min_nodes
        self._first = True
        self.wait_s = wait_s
        self.round_deadline_s = round_deadline_s
        self.stopping = threading.Event()

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
        svc.round_num, svc.phase = round_num, "waiting for nodes"
        start = time.monotonic()
        last_log = -1e9
        while True:
            ids = svc.connected()
            if len(ids) >= need:
                return ids
            now = time.monotonic()
            missing = sorted(set(range(svc.num_clients)) - set(ids))
            msg = (f"round {round_num}: {len(ids)} nodes connected, {need} needed "
                   f"(missing client ids {_short(missing)})")
            if self.stopping.is_set():
                raise TransportError(f"stopped while waiting for nodes; {msg}")
            if now - start >= self.wait_s:
                raise TransportError(f"gave up after {self.wait_s:.0f}s: {msg}")
            if now - last_log >= 5.0:
                log.info("event=waiting %s", msg)
                last_log = now
            time.sleep(0.05)

    def fit(self, round_num: int, client_ids: Sequence[int], params: Params, ins: FitInstructions,
            reducer: Reducer | None = None) -> Iterator[FitResult]:
        svc = self.service
        task = svc.open_round(round_num, client_ids, params, ins)
        pending = set(task.client_ids)
        deadline = time.monotonic() + self.round_deadline_s
        try:
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    for cid in sorted(pending):
                        yield ClientFailure(cid, "fit", f"missed the {self.round_deadline_s:.0f}s "
                                                        "round deadline")
                    break
                try:
                    update, verdict = task.results.get(timeout=min(0.1, left))
                except queue.Empty:
                    live = set(svc.connected())
                    for cid in sorted(pending - live - task.done):
                        pending.discard(cid)
                        log.warning("event=node_lost round=%d client=%d", round_num, cid)
                        yield ClientFailure(cid, "fit", "node disconnected")
                    continue
                cid = update.client_id
                pending.discard(cid)
                if isinstance(update, ClientFailure):
                    verdict.set(True)
                    yield update
                    continue
                if reducer is None:
                    verdict.set(True)
                    yield update
                    continue
                try:
                    terms = reducer(update)
                except FedgeError as exc:
                    verdict.set(False, str(exc))
                    yield ClientFailure(cid, "rejected", str(exc))
                    continue
                verdict.set(True)
                metrics = {**update.metrics, "num_examples": float(update.num_examples),
                           "uplink_bytes": float(update.uplink_bytes)}
                n, up = update.num_examples, update.uplink_bytes
                del update
                yield PartialSum(terms, [cid], n, [metrics], up)
        finally:
            svc.close_round(task)

    def evaluate(self, round_num: int, client_ids: Sequence[int],
                 params: Params) -> Iterator[EvalResult | ClientFailure]:
        for cid in client_ids:
            yield ClientFailure(cid, "evaluate", "federated evaluation is not offered over gRPC")

    def close(self) -> None:
        self.service.finished = True


def _short(ids: list[int], n: int = 12) -> str:
    head = ", ".join(map(str, ids[:n]))
    return f"{head}, … ({len(ids)} in all)" if len(ids) > n else head or "none"
