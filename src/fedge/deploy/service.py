"""The server's request handlers, free of gRPC so they can be fuzzed and unit-tested.

Each handler takes the raw request bytes and the request metadata and returns raw reply
bytes, or raises :class:`Refused` with the gRPC status to answer. The event-driven front
(:mod:`fedge.deploy.guard`) drives the same pieces without a thread per call: a
subscription asks :meth:`FedgeService.next_for` what to send a node whenever the service
calls ``on_change`` (a round, an evaluation or a protocol stage opened, the run ended), and
a Push is :meth:`FedgeService.push_open`, then :meth:`PushIn.add` per chunk, then
:meth:`PushIn.finish` and :meth:`FedgeService.deliver`; a Push cut before its last chunk leaves
its verified chunks with the service (:class:`KeptPush`) for the node to resume. Nothing a node sends
can stop the server: malformed bytes, bad signatures, updates for another run or round,
wrong shapes or dtypes are refused with a reason that is logged and returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fedge.core.errors import ConfigError, FedgeError, TransportError
from fedge.core.params import Params, ParamSpec
from fedge.core.types import ClientUpdate, EvalResult, FitInstructions, Metrics
from fedge.deploy import wire
from fedge.deploy.auth import AuthError, Caller, RelayClaim, Verifier
from fedge.deploy.classes import ModelClass
from fedge.deploy.proto import pb
from fedge.deploy.ratelimit import RefusalLog
from fedge.deploy.store import Store
from fedge.engine.aggregator import ClientFailure, PartialSum

log = logging.getLogger("fedge.deploy")
REJOIN = wire.dump(pb.PollReply(action=pb.PollReply.REJOIN, message="unknown session: join again"))
STOP = wire.dump(pb.PollReply(action=pb.PollReply.STOP, message="run finished"))
PING = wire.dump(pb.PollReply(action=pb.PollReply.WAIT))
"""What a subscription sends when nothing else is due: it tells the node the server is there."""
Metadata = Sequence[tuple[str, str | bytes]] | Caller
"""A request's signed metadata, or the :class:`Caller` the gRPC gate already authenticated from it."""


class Refused(TransportError):
    """A request the server answers with a non-OK gRPC status (``code``) and a reason."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    client_id: int
    profile: str
    last_heartbeat: float
    connected: bool
    busy: bool
    relay_clients: int = 0
    """A relay's block size (``fedge relay``, ``relay=N`` in the allow-list); 0 for a node that trains itself."""
    relay_name: str = ""
    """A relay's name in the allow-list."""


@dataclass(frozen=True)
class ServerStatus:
    """A read-only snapshot of a running server: nodes, round progress, last metrics."""

    run_id: str
    phase: str
    round: int
    rounds: int
    min_nodes: int
    nodes: tuple[NodeStatus, ...]
    waiting_on: tuple[int, ...] = ()
    received: int = 0
    last_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def connected(self) -> int:
        return sum(n.connected for n in self.nodes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> ServerStatus:
        d = json.loads(text)
        d["nodes"] = tuple(NodeStatus(**n) for n in d["nodes"])
        d["waiting_on"] = tuple(d["waiting_on"])
        return cls(**d)


@dataclass
class _Node:
    node_id: str
    client_id: int
    profile: str
    session: str
    last_seen: float
    busy: bool = False
    streams: int = 0
    """Subscribe streams open: a node with one is connected however long it has been silent."""
    relay: RelayClaim | None = None
    """Set for a relay (``fedge relay``): it answers for client ids ``client_id .. + relay.clients - 1``."""

    @property
    def ids(self) -> range:
        return range(self.client_id, self.client_id + (self.relay.clients if self.relay else 1))

    def live(self, now: float, timeout_s: float) -> bool:
        return self.streams > 0 or now - self.last_seen <= timeout_s


@dataclass
class Relayed:
    """What a relay pushed for the selected client ids it answers for (``covers``): one partial
    sum of their contributions (training), one evaluation over them, or its reported failure."""

    covers: frozenset[int]
    result: PartialSum | EvalResult | ClientFailure
    node: str = ""
    """The relay's node id, its client-id block and its allow-list name: what the round's record names it by."""
    block: range = range(0)
    name: str = ""


Result = ClientUpdate | EvalResult | ClientFailure | Relayed
"""What a node's Push of a task yields: an update (training), an evaluation, or its reported failure;
a relay's push is :class:`Relayed`."""


@dataclass
class RoundTask:
    """One round's work: the encoded global model + instructions, who may answer, results.

    ``kind`` is ``"fit"`` (train, Push an update) or ``"evaluate"`` (evaluate on the node's own
    test data, Push the result). ``reply`` is the serialized TRAIN / EVALUATE message every
    selected node receives, made once; small tasks carry their chunks in it.
    """

    round_num: int
    task_id: str
    header: Any
    chunks: list[bytes]
    """The serialized chunk messages, made once and shared by every node's Fetch."""
    client_ids: frozenset[int]
    spec: ParamSpec
    kind: str = "fit"
    version: int | None = None
    """The model version the task carries, stamped by an asynchronous run (None in a synchronous round)."""
    reply: bytes = b""
    results: queue.Queue[tuple[Result, _Verdict]] = field(default_factory=queue.Queue)
    """Unbounded in count, bounded in bytes: each waiting result holds its push's byte-budget reservation."""
    done: set[int] = field(default_factory=set)
    closed: bool = False
    classes: dict[int, TaskClass] = field(default_factory=dict)
    """Per client, its model class's own message (:mod:`fedge.deploy.classes`); empty when all share one."""

    def reply_for(self, cid: int) -> bytes:
        c = self.classes.get(cid)
        return self.reply if c is None else c.reply

    def chunks_for(self, cid: int) -> list[bytes]:
        c = self.classes.get(cid)
        return self.chunks if c is None else c.chunks

    def spec_for(self, cid: int) -> ParamSpec:
        """The shapes client ``cid``'s update must have."""
        c = self.classes.get(cid)
        return self.spec if c is None else c.spec

    def selected(self, node: _Node) -> frozenset[int]:
        """The client ids of this task that ``node`` answers for (a relay: those of its block)."""
        if node.relay is None:
            return frozenset((node.client_id,)) if node.client_id in self.client_ids else frozenset()
        return self.client_ids.intersection(node.ids)


@dataclass
class TaskClass:
    """One model class's part of a round task: its message and chunks, made once for all its nodes."""

    header: Any
    chunks: list[bytes]
    reply: bytes
    spec: ParamSpec


@dataclass
class _Verdict:
    event: threading.Event = field(default_factory=threading.Event)
    accepted: bool = False
    reason: str = ""
    on_set: Callable[[], None] | None = None
    """Called once the verdict is in (from any thread): how an event-loop handler is woken."""

    def set(self, accepted: bool, reason: str = "") -> None:
        if self.event.is_set():
            return
        self.accepted, self.reason = accepted, reason
        self.event.set()
        if self.on_set is not None:
            self.on_set()


def encode_instructions(params: Params, ins: FitInstructions, version: int | None = None) -> dict[str, Any]:
    """The TRAIN task's tree; an asynchronous run stamps it with the model ``version`` it carries."""
    train = {k: getattr(ins.train, k) for k in ins.train.__dataclass_fields__}
    tree = {
        "params": list(params),
        "round": ins.round_num,
        "train": train,
        "config": ins.config,
        "per_client": [[cid, over] for cid, over in ins.per_client.items()],
    }
    if version is not None:
        tree["version"] = version
    return tree


def update_from_tree(tree: Any, client_id: int, spec: ParamSpec) -> ClientUpdate:
    """Build a :class:`ClientUpdate` from a decoded bundle, checking its structure."""
    if not isinstance(tree, dict):
        raise wire.WireError("update is not a map")
    delta, n = tree.get("delta"), tree.get("num_examples")
    if not isinstance(delta, list) or not all(isinstance(d, np.ndarray) for d in delta):
        raise wire.WireError("update delta is not a list of tensors")
    if any(d.dtype != np.float32 for d in delta):
        raise wire.WireError("update delta tensors must be float32")
    payload = tree.get("payload") or {}
    if delta or not payload:
        spec.check(delta, what=f"update from client {client_id}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise wire.WireError(f"update num_examples must be a non-negative integer, got {n!r}")
    metrics = tree.get("metrics") or {}
    extras = tree.get("extras") or {}
    if not isinstance(metrics, dict) or not all(isinstance(v, int | float) for v in metrics.values()):
        raise wire.WireError("update metrics must map names to numbers")
    if not isinstance(extras, dict) or not all(
        isinstance(v, list) and all(isinstance(a, np.ndarray) for a in v) for v in extras.values()
    ):
        raise wire.WireError("update extras must map names to tensor lists")
    if not isinstance(payload, dict):
        raise wire.WireError("update payload must be a map")
    return ClientUpdate(
        client_id=client_id,
        delta=list(delta),
        num_examples=n,
        metrics={k: float(v) for k, v in metrics.items()},
        extras={k: list(v) for k, v in extras.items()},
        payload=payload,
    )


def eval_from_tree(tree: Any, client_id: int) -> EvalResult:
    """Build an :class:`EvalResult` from a node's decoded evaluation, checking its structure."""
    if not isinstance(tree, dict):
        raise wire.WireError("evaluation is not a map")
    n, loss, acc, metrics = tree.get("num_examples"), tree.get("loss"), tree.get("accuracy"), tree.get("metrics") or {}
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise wire.WireError(f"evaluation num_examples must be a non-negative integer, got {n!r}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (loss, acc)):
        raise wire.WireError("evaluation loss and accuracy must be numbers")
    if not isinstance(metrics, dict) or not all(isinstance(v, int | float) for v in metrics.values()):
        raise wire.WireError("evaluation metrics must map names to numbers")
    assert isinstance(loss, int | float) and isinstance(acc, int | float)
    return EvalResult(client_id, n, float(loss), float(acc), {k: float(v) for k, v in metrics.items()})


def partial_from_tree(tree: Any, covers: frozenset[int], claim: RelayClaim, participant: int = -1) -> PartialSum:
    """Build a relay's :class:`PartialSum` from its decoded push, checking its structure and claims.

    Its client ids must be selected ids of the relay's block (each once), its example count
    within what the allow-list lets it claim (``examples=M`` per client). Whether its terms
    are the ones the strategy sums, finite, and weighted no more than its examples, is the
    round's to check (:func:`fedge.deploy.transport.check_partial`): the service does not
    know the strategy. A masked push (``"masked": true``, no terms: a relay under ``[secagg]``)
    holds its terms in the round's secure aggregation, where the relay is ``participant``.
    """
    masked = isinstance(tree, dict) and tree.get("masked") is True
    if masked and "terms" in tree:
        raise wire.WireError("a masked partial sum carries no terms: they go masked into the round's session")
    if not isinstance(tree, dict) or not isinstance(tree.get("terms", {} if masked else None), dict):
        raise wire.WireError("partial sum is not a map with terms")
    terms = tree.get("terms", {})
    if not all(
        isinstance(v, list) and all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in v)
        for v in terms.values()
    ):
        raise wire.WireError("partial sum terms must map names to lists of float64 tensors")
    ids, n = tree.get("client_ids"), tree.get("num_examples")
    if not isinstance(ids, list) or not ids or not all(isinstance(c, int) and not isinstance(c, bool) for c in ids):
        raise wire.WireError("partial sum client_ids must be a non-empty list of client ids")
    if len(set(ids)) != len(ids) or not set(ids) <= covers:
        raise wire.WireError(
            f"partial sum names client ids {sorted(set(ids) - covers)[:8]} outside this relay's cohort"
        )
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise wire.WireError(f"partial sum num_examples must be a non-negative integer, got {n!r}")
    if claim.examples and n > claim.examples * len(ids):
        raise wire.WireError(
            f"partial sum claims {n} examples for {len(ids)} clients, above the allow-list's examples={claim.examples}"
        )
    metrics = tree.get("metrics") or []
    if (
        not isinstance(metrics, list)
        or len(metrics) != len(ids)
        or not all(isinstance(m, dict) and all(isinstance(v, int | float) for v in m.values()) for m in metrics)
    ):
        raise wire.WireError("partial sum metrics must be one map of numbers per client id")
    failures = []
    for f in tree.get("failures") or []:
        if not (isinstance(f, list) and len(f) == 3 and isinstance(f[0], int) and f[0] in covers):
            raise wire.WireError("partial sum failures must be [client id, stage, reason] of this relay's cohort")
        failures.append(ClientFailure(int(f[0]), str(f[1])[:40], str(f[2])[:300]))
    return PartialSum(
        terms={str(k): list(v) for k, v in terms.items()},
        client_ids=[int(c) for c in ids],
        num_examples=n,
        metrics=[{k: float(v) for k, v in m.items()} for m in metrics],
        failures=failures,
        masked_by=participant if masked else None,
    )


SECAGG_REQUESTS = {
    "advertise": "RoundSetup",
    "share": "KeyRoster",
    "masked_input": "ShareInbox",
    "unmask": "UnmaskRequest",
}
SECAGG_REPLIES = {
    "advertise": "AdvertiseKeys",
    "share": "ShareKeys",
    "masked_input": "MaskedInput",
    "unmask": "UnmaskResponse",
}
"""What the server sends in each stage of secure aggregation, and what a node answers."""


@dataclass
class SecAggSession:
    """One secure-aggregation round relayed between nodes: the current stage's request for
    each node still expected, who has answered, and the answers in arrival order.

    ``inbox`` holds ``(client id, message)``; ``None`` is a node that withdrew or sent a
    message the server could not accept (it counts as dropped at that stage).
    """

    task_id: str
    setup: Any
    stage: str = ""
    outbox: dict[int, bytes] = field(default_factory=dict)
    answered: set[int] = field(default_factory=set)
    inbox: queue.Queue[tuple[int, Any]] = field(default_factory=queue.Queue)
    received_bytes: dict[int, int] = field(default_factory=dict)
    closed: bool = False

    def max_bytes(self, stage: str) -> int:
        """The largest answer accepted in ``stage``."""
        if stage == "masked_input":
            return 4096 + int(self.setup.length) * int(self.setup.bits) // 8
        return 65536 + 1024 * len(self.setup.cohort)


def _task_bytes(task: RoundTask) -> int:
    """The model bytes a round task serialised: once per class, not per node."""
    if not task.classes:
        return int(task.header.total_bytes)
    return sum(int(c.header.total_bytes) for c in {id(c): c for c in task.classes.values()}.values())


def _joined(first: Any, more: Iterable[bytes], limit: int) -> bytes:
    """The whole message of a secure-aggregation answer sent in parts, checked part by part and against
    the SHA-256 its signed first part names; at most ``limit`` bytes are kept."""
    parts, total = [first.message], len(first.message)
    for raw in more:
        p = wire.parse(pb.SecAggPost, raw)
        if p.task_id != first.task_id or p.stage != first.stage or p.part != len(parts):
            raise wire.WireError(f"part {p.part} does not follow part {len(parts) - 1} of this answer")
        total += len(p.message)
        if total > limit:
            raise wire.WireError(f"{first.stage} message exceeds {limit} bytes")
        parts.append(p.message)
    if len(parts) != first.parts:
        raise wire.WireError(f"{len(parts)} of {first.parts} parts arrived")
    whole = b"".join(parts)
    if hashlib.sha256(whole).digest() != first.sha256:
        raise wire.WireError("the parts do not make the message the first part signs")
    return whole


class ByteBudget:
    """Bytes held by updates being received: at most ``total`` server-wide and ``per_node`` for one node.

    Reserved chunk by chunk as chunks arrive — never from a size a header claims —
    and released when the update has been reduced or refused, so a stream that stalls holds
    only what it has really sent. It never blocks: a chunk that does not fit is refused and
    the node retries later, so a full budget cannot hang a worker thread. The chunks kept
    from cut pushes stay counted, but give way to a push being received: before a chunk is
    refused, ``reclaim`` may release some of them (it answers whether it did).
    """

    def __init__(self, total: int, per_node: int) -> None:
        self.total, self.per_node = total, per_node
        self.used = 0
        self._by_node: dict[str, int] = {}
        self._lock = threading.Lock()
        self.reclaim: Callable[[], bool] = lambda: False

    def take(self, node: str, n: int) -> str:
        """Reserve ``n`` bytes for ``node``: '' when granted, otherwise why not."""
        with self._lock:
            mine = self._by_node.get(node, 0) + n
            if mine > self.per_node:
                return f"node {node} would hold {mine} update bytes in flight, above its limit of {self.per_node}"
            if self.used + n > self.total:
                return (
                    f"server busy: the in-flight update budget ({self.total / 2**20:g} MiB, "
                    "deploy.max_inflight_mib) is in use; retry later"
                )
            self.used += n
            self._by_node[node] = mine
            return ""

    def give(self, node: str, n: int) -> None:
        with self._lock:
            self.used -= n
            left = self._by_node.pop(node, 0) - n
            if left > 0:
                self._by_node[node] = left

    def reserve(self, node: str) -> Reservation:
        return Reservation(self, node)


class Reservation:
    """One push's share of the :class:`ByteBudget`, given back when the push ends, whatever the outcome."""

    def __init__(self, budget: ByteBudget, node: str) -> None:
        self.budget, self.node, self.bytes = budget, node, 0

    def take(self, n: int) -> None:
        reason = self.budget.take(self.node, n)
        while reason and self.budget.reclaim():
            reason = self.budget.take(self.node, n)
        if reason:
            raise Refused("RESOURCE_EXHAUSTED", reason)
        self.bytes += n

    def adopt(self, n: int) -> None:
        """Answer for ``n`` bytes already taken from the budget (a resumed push's kept chunks)."""
        self.bytes += n

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.budget.give(self.node, self.bytes)
        self.bytes = 0


@dataclass
class KeptPush:
    """The verified chunks of a cut Push, kept so that its node resumes at the next one.

    Only chunks that passed their checksum are held, and their bytes stay reserved in the
    :class:`ByteBudget` (``nbytes``, against the node's limit too) until the push is resumed,
    the node pushes that task again from its start, joins again, or the task closes.
    """

    digest: bytes
    """SHA-256 of the update's header: a resume must name the same update."""
    inc: wire.Incoming
    size: int
    nbytes: int


def _update_digest(head: Any) -> bytes:
    return hashlib.sha256(wire.dump(head.update)).digest()


@dataclass
class PushIn:
    """One Push being received: its checked header, and the chunks kept so far as they verify.

    Each chunk is reserved in the byte budget before it is kept; nothing is allocated from
    the size the header claims, and a decode slot is taken only for the CPU-bound decode and
    checks (:meth:`finish`), never while waiting for a slow stream.
    """

    svc: FedgeService
    node_id: str
    node: _Node
    task: RoundTask
    head: Any
    inc: wire.Incoming | None
    """None for a node that reports a failure instead of a result."""
    size: int
    adopted: int = 0
    """Budget bytes of the kept chunks a resumed push carries on from."""

    @property
    def cid(self) -> int:
        return self.node.client_id

    def take_inline(self, held: Reservation) -> None:
        """Keep the chunks that came inside the header (a small update), each reserved like any other."""
        if self.adopted:
            held.adopt(self.adopted)
            self.adopted = 0
        chunks = self.head.chunks
        if chunks and self.inc is None:
            raise wire.WireError("a failure report carries chunks")
        for c in chunks:
            held.take(len(c.data))
            assert self.inc is not None
            self.inc.add(c)  # its bytes are in ``size`` already: they came inside the header message
        del chunks[:]

    def add(self, raw: bytes, held: Reservation) -> None:
        if self.task.closed:
            raise wire.WireError(f"round {self.task.round_num} closed while client {self.cid}'s update was arriving")
        m = wire.parse(pb.PushMessage, raw)
        if m.WhichOneof("part") != "chunk" or self.inc is None:
            raise wire.WireError("push carries a second header" if self.inc else "a failure report carries chunks")
        held.take(len(m.chunk.data))
        self.inc.add(m.chunk)
        self.size += len(raw)

    def cut(self, exc: BaseException, held: Reservation) -> None:
        """The push ended before its end for ``exc``: unless its data was refused, keep its verified chunks."""
        if not isinstance(exc, wire.WireError):
            self.svc.keep(self, held)

    def ended(self, held: Reservation) -> bytes | None:
        """The stream ended: None when the update is whole, else the reply to a push cut short (its
        node gone, as a cancelled call ends, or a caller that stopped early), whose verified chunks are kept."""
        inc = self.inc
        if inc is None or inc.complete:
            return None
        received, total = inc.received, len(inc.header.chunk_sha256)
        reason = f"push ended after {received} of {total} chunks"
        if self.svc.keep(self, held):
            reason += f": resume at chunk {received}"
            return wire.dump(pb.PushReply(accepted=False, reason=reason, held=received))
        self.svc.refusals.refused("Push", "REFUSED", reason, event="update_refused", node=self.node_id)
        return wire.dump(pb.PushReply(accepted=False, reason=reason))

    def finish(self) -> Result:
        """Decode and check the whole push (under a decode slot), then mark its client done for the round."""
        task, cid, claim = self.task, self.cid, self.node.relay
        covers = task.selected(self.node)
        result: ClientUpdate | EvalResult | ClientFailure | PartialSum
        if self.inc is None:
            result = ClientFailure(
                cid, "fit" if task.kind == "fit" else "evaluate", f"node reports: {self.head.error[:300]}"
            )
        else:
            with self.svc._decoding:
                tree = self.inc.value()
                if task.kind == "fit" and claim is not None:
                    partial = partial_from_tree(tree, covers, claim, self.node.client_id)
                    partial.uplink_bytes = self.size
                    result = partial
                elif task.kind == "fit":
                    update = update_from_tree(tree, cid, task.spec_for(cid))
                    update.uplink_bytes = self.size
                    result = update
                else:
                    result = eval_from_tree(tree, cid)
            self.inc = None
        with self.svc._lock:
            if not covers or covers & task.done or task.closed:
                raise wire.WireError(f"round {task.round_num} no longer takes client {cid}'s update")
            task.done.update(covers)
        self.node.busy = False
        if claim is not None:
            assert not isinstance(result, ClientUpdate)
            return Relayed(covers, result, self.node.node_id, self.node.ids, claim.name)
        assert not isinstance(result, PartialSum)
        return result

    def expire(self, verdict: _Verdict) -> None:
        """Once the round has closed, the verdict it will never give is a refusal (a no-op once given)."""
        if self.task.closed:
            verdict.set(False, f"round {self.task.round_num} closed before the update was read")

    def refused(self, exc: Exception) -> bytes:
        self.svc.refusals.refused("Push", "REFUSED", str(exc), event="update_refused", node=self.node_id)
        return wire.dump(pb.PushReply(accepted=False, reason=str(exc)))

    def closed_reply(self) -> bytes:
        return wire.dump(pb.PushReply(accepted=False, reason=f"round {self.task.round_num} closed"))

    def reply(self, verdict: _Verdict) -> bytes:
        if not verdict.accepted:
            self.svc.refusals.refused("Push", "REJECTED", verdict.reason, event="update_rejected", node=self.node_id)
        return wire.dump(pb.PushReply(accepted=verdict.accepted, reason=verdict.reason))


class FedgeService:
    """Node registry, round tasks and the handlers (Join, Poll, Fetch, Push, SecAgg, Status)."""

    def __init__(
        self,
        *,
        store: Store,
        verifier: Verifier,
        run_id: str,
        config_toml: str,
        num_clients: int,
        rounds: int,
        min_nodes: int = 1,
        first_client: int = 0,
        heartbeat_s: float = 2.0,
        node_timeout_s: float = 15.0,
        chunk_size: int = wire.DEFAULT_CHUNK,
        max_update_bytes: int = 2**31,
        max_decoding: int = 4,
        max_inflight_bytes: int = 2**32,
    ) -> None:
        self.store, self.verifier = store, verifier
        self.run_id, self.config_toml = run_id, config_toml
        self.session = uuid.uuid4().hex[:12]
        self.num_clients, self.rounds, self.min_nodes = num_clients, rounds, min_nodes
        self.clients = range(first_client, first_client + num_clients)
        """The client ids this service hands out (a relay's: the block its parent gave it)."""
        self.kappa1 = 0
        """Set by a run with ``[hierarchy]``: the edge steps its relays run per round (sent in each TRAIN)."""
        self.fanout = 0
        """Set by a run with ``[hierarchy]``: every node must be a relay of this many client ids
        (``zones_per_vehicle``), at a block that starts at a multiple of it (vehicle ``v`` is
        clients ``v n .. v n + n - 1``, as the simulation groups them); 0: any node."""
        self._opened: dict[tuple[int, str], int] = {}
        self.heartbeat_s, self.node_timeout_s = heartbeat_s, node_timeout_s
        self.chunk_size, self.max_update_bytes = chunk_size, max_update_bytes
        if max_inflight_bytes < max_update_bytes:
            raise ConfigError(
                f"deploy.max_inflight_mib ({max_inflight_bytes / 2**20:g}) is below deploy.max_update_mib "
                f"({max_update_bytes / 2**20:g}): an update of the largest allowed size could never be received"
            )
        self.budget = ByteBudget(max_inflight_bytes, max_update_bytes)
        self.budget.reclaim = self._drop_oldest_kept
        self._decoding = threading.BoundedSemaphore(max_decoding)
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._kept: dict[tuple[str, str], KeptPush] = {}
        """Cut pushes' verified chunks by (node id, task id), for their nodes to resume (:meth:`keep`)."""
        self.task: RoundTask | None = None
        """The task opened last (what the status reports); :attr:`tasks` holds every open one."""
        self.tasks: dict[str, RoundTask] = {}
        """Open tasks by id: one in a synchronous round, one per dispatch in flight in an asynchronous run."""
        self.arrived = threading.Event()
        """Set whenever a result is handed to an open task (an asynchronous run waits on it)."""
        self.secagg: SecAggSession | None = None
        self.phase = "starting"
        self.round_num = 0
        self.finished = False
        self.last_metrics: dict[str, Any] = {}
        self.refusals = RefusalLog(log)
        self.on_change: Callable[[], None] = lambda: None
        """Called (from any thread) when what nodes should be sent has changed; the gRPC front sets it."""

    def finish(self) -> None:
        """The run is over: every node is told to stop."""
        self.finished = True
        self.on_change()

    # -- registry ----------------------------------------------------------------
    def connected(self) -> list[int]:
        """Client ids of nodes heard from within the node timeout, sorted."""
        now = time.time()
        with self._lock:
            return sorted(c for n in self._nodes.values() if n.live(now, self.node_timeout_s) for c in n.ids)

    def streaming(self) -> int:
        """Nodes holding a Subscribe stream now."""
        with self._lock:
            return sum(n.streams > 0 for n in self._nodes.values())

    def is_connected(self, client_id: int) -> bool:
        return client_id in self.connected()

    def _auth(self, method: str, raw: bytes, md: Metadata) -> str:
        """The node id of a request whose body ``raw`` is the one its metadata signs."""
        try:
            caller = md if isinstance(md, Caller) else self.verifier.authenticate(method, md)
            caller.check(method, raw)
        except AuthError as exc:
            raise Refused(exc.code, str(exc)) from None
        return caller.node_id

    def _session_node(self, node_id: str, session: str) -> _Node | None:
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or node.session != session:
                return None
            node.last_seen = time.time()
            return node

    # -- handlers ----------------------------------------------------------------
    def join(self, raw: bytes, md: Metadata) -> bytes:
        node_id = self._auth("Join", raw, md)
        req = wire.parse(pb.JoinRequest, raw)
        profile = req.profile[:64]
        claim = self.verifier.relay(node_id)
        span = claim.clients if claim else 1
        first, last = self.clients.start, self.clients.stop - 1
        fanout = self.fanout
        if fanout and (claim is None or claim.clients != fanout):
            marked = f"is marked relay={claim.clients}" if claim else "is not marked relay=N"
            raise Refused(
                "PERMISSION_DENIED",
                f"this run's [hierarchy] serves vehicle relays of zones_per_vehicle = {fanout} clients; node {node_id} "
                f"{marked} in the allow-list (a zone joins its vehicle's `fedge relay`)",
            )
        with self._lock:
            known = self.store.client_of(node_id)
            blocks = self._relay_blocks(node_id)
            if req.partition >= 0:
                cid = req.partition
                if cid not in self.clients or cid + span - 1 > last:
                    raise Refused(
                        "INVALID_ARGUMENT",
                        f"partition {cid}" + (f" with {span} clients" if claim else "") + f" does not exist: "
                        f"clients are {first}..{last}",
                    )
                for c in range(cid, cid + span):
                    owner = self.store.node_of(c) or next((n for n, r in blocks.items() if c in r), None)
                    if owner is not None and owner != node_id:
                        raise Refused("ALREADY_EXISTS", f"client {c} belongs to node {owner}")
                if known is not None and known != cid:
                    raise Refused("ALREADY_EXISTS", f"node {node_id} is registered as client {known}")
                if fanout and (cid - first) % fanout:
                    raise Refused(
                        "INVALID_ARGUMENT",
                        f"partition {cid} is not a vehicle's first zone: [hierarchy] puts vehicle v at clients "
                        f"v*{fanout} .. v*{fanout}+{fanout - 1}",
                    )
            elif known is not None:
                cid = known
            else:
                now = time.time()
                live = {
                    c
                    for n in self._nodes.values()
                    if n.node_id != node_id and n.live(now, self.node_timeout_s)
                    for c in n.ids
                }
                taken = self.store.used_clients() | live | {c for r in blocks.values() for c in r}
                starts = range(first, last - span + 2, fanout or 1)  # a vehicle's block starts at a multiple
                free = [c for c in starts if not taken.intersection(range(c, c + span))]
                if not free:
                    what = f"{span} consecutive client slots" if claim else "client slots"
                    raise Refused("RESOURCE_EXHAUSTED", f"no {what} left of {self.num_clients}")
                cid = free[0]
            self.store.register(node_id, cid, profile)
            session = uuid.uuid4().hex[:12]
            self._nodes[node_id] = _Node(node_id, cid, profile, session, time.time(), relay=claim)
        self.drop_kept(lambda k: k[0] == node_id)  # a node that joins again starts its work over
        log.info("event=join node=%s client=%d clients=%d profile=%r", node_id, cid, span, profile)
        return wire.dump(
            pb.JoinReply(
                run_id=self.run_id,
                session=f"{self.session}:{session}",
                client_id=cid,
                config_toml=self.config_toml,
                heartbeat_s=self.heartbeat_s,
                clients=claim.clients if claim else 0,
            )
        )

    def _relay_blocks(self, but: str) -> dict[str, range]:
        """The client-id blocks of the registered relays other than ``but``, by node id."""
        out = {}
        for nid, claim in self.verifier.relays().items():
            start = self.store.client_of(nid) if nid != but else None
            if start is not None:
                out[nid] = range(start, start + claim.clients)
        return out

    def poll(self, raw: bytes, md: Metadata) -> bytes:
        node_id = self._auth("Poll", raw, md)
        req = wire.parse(pb.PollRequest, raw)
        node = self.session_of(node_id, req.session)
        if node is None:
            return REJOIN
        node.busy = req.busy
        out = None if req.busy and not self.finished else self.next_for(node)  # a busy node's poll is a heartbeat
        return out if out is not None else wire.dump(pb.PollReply(action=pb.PollReply.WAIT, wait_s=self.heartbeat_s))

    def session_of(self, node_id: str, session: str) -> _Node | None:
        """The node of a Poll or Subscribe naming ``session``; None when it must join (again)."""
        server_session, _, node_session = session.partition(":")
        return self._session_node(node_id, node_session) if server_session == self.session else None

    def subscribe_open(self, raw: bytes, md: Metadata) -> _Node | None:
        """The node a Subscribe call is for (its first message is a PollRequest), None when it must join again."""
        node_id = self._auth("Subscribe", raw, md)
        return self.session_of(node_id, wire.parse(pb.PollRequest, raw).session)

    def is_current(self, node: _Node) -> bool:
        """Whether ``node`` is still the registered session of its node id (it did not join again)."""
        with self._lock:
            return self._nodes.get(node.node_id) is node

    def next_for(self, node: _Node, sent: set[str] | None = None) -> bytes | None:
        """What ``node`` should be sent now: STOP, its secure-aggregation request, or the open task; None for nothing.

        ``sent`` (a subscription's memory) holds what this stream already delivered, which is
        not sent twice; a Poll passes none and gets the task until its node has answered it.
        """
        if self.finished:
            return STOP
        cid = node.client_id
        sa = self.secagg
        if sa is not None and not sa.closed:
            with self._lock:
                out = sa.outbox.get(cid) if cid not in sa.answered else None
                stage = sa.stage
            key = f"{sa.task_id}/{stage}"
            if out is not None and (sent is None or key not in sent):
                if sent is not None:
                    sent.add(key)
                return wire.dump(
                    pb.PollReply(
                        action=pb.PollReply.SECAGG,
                        task_id=sa.task_id,
                        round=sa.setup.round_num,
                        secagg_stage=stage,
                        secagg_message=out,
                    )
                )
        for task in list(self.tasks.values()):
            mine = frozenset() if task.closed else task.selected(node)
            if mine and not mine & task.done and (sent is None or task.task_id not in sent):
                if sent is not None:
                    sent.add(task.task_id)
                node.busy = task.kind == "fit"
                return task.reply_for(cid)
        return None

    def fetch(self, raw: bytes, md: Metadata) -> Iterator[bytes]:
        node_id = self._auth("Fetch", raw, md)
        req = wire.parse(pb.FetchRequest, raw)
        task = self.tasks.get(req.task_id)
        if task is None or task.closed:
            raise Refused("FAILED_PRECONDITION", f"task {req.task_id[:40]!r} is not open")
        chunks = task.chunks
        if task.classes:
            with self._lock:
                node = self._nodes.get(node_id)
            if node is None or node.client_id not in task.classes:
                raise Refused("FAILED_PRECONDITION", f"task {req.task_id[:40]!r} has no model for this node")
            chunks = task.chunks_for(node.client_id)
        if req.start > len(chunks):
            raise Refused("OUT_OF_RANGE", f"task has {len(chunks)} chunks")
        return iter(chunks[req.start :])

    def push(self, messages: Iterable[bytes], md: Metadata) -> bytes:
        """A node's Push, read to its end in this thread (the event-driven front drives the same pieces)."""
        it = iter(messages)
        first = next(it, None)
        if first is None:
            raise Refused("INVALID_ARGUMENT", "empty push")
        opened = self.push_open(first, md)
        if isinstance(opened, bytes):
            return opened
        with self.budget.reserve(opened.node_id) as held:
            try:
                opened.take_inline(held)
                try:
                    for raw in it:
                        opened.add(raw, held)
                except BaseException as exc:
                    opened.cut(exc, held)
                    raise
                if (short := opened.ended(held)) is not None:
                    return short
                result = opened.finish()
            except Refused:
                raise
            except (FedgeError, ValueError) as exc:
                return opened.refused(exc)
            verdict = self.deliver(opened.task, result)
            if verdict is None:
                return opened.closed_reply()
            del result
            while not verdict.event.wait(0.2):
                opened.expire(verdict)
        return opened.reply(verdict)

    def push_open(self, first: bytes, md: Metadata) -> PushIn | bytes:
        """Authenticate and check a Push's header: the push to read, or the reply that refuses it."""
        node_id = self._auth("Push", first, md)
        msg = wire.parse(pb.PushMessage, first)
        if msg.WhichOneof("part") != "header":
            raise Refused("INVALID_ARGUMENT", "push must start with its header")
        head = msg.header
        with self._lock:
            node = self._nodes.get(node_id)
        task = self.tasks.get(head.task_id, self.task)
        if node is None:
            raise Refused("FAILED_PRECONDITION", "node has not joined this server session")
        node.last_seen = time.time()
        reason = self._task_problem(task, head, node)
        if reason:
            self.refusals.refused(
                "Push", "REFUSED", reason, event="update_refused", node=node_id, client=node.client_id
            )
            return wire.dump(pb.PushReply(accepted=False, reason=reason))
        assert task is not None
        key = (node_id, task.task_id)
        if head.resume or head.start:
            return self._resumed(first, node_id, node, task, head)
        self._release(key)  # the node pushes this task again from its start
        inc = None if head.error else wire.Incoming(head.update, max_bytes=self.max_update_bytes)
        return PushIn(self, node_id, node, task, head, inc, len(first))

    def _resumed(self, first: bytes, node_id: str, node: _Node, task: RoundTask, head: Any) -> PushIn | bytes:
        """A Push that asks where to resume (``resume``: the reply's ``held``), or resumes at chunk ``start``.

        A resume is taken only for the update whose verified chunks are kept and only at the chunk
        after them; anything else is refused OUT_OF_RANGE (as a Fetch past its task's chunks is) and
        the kept chunks stay as they were.
        """
        key, digest = (node_id, task.task_id), _update_digest(head)
        with self._lock:
            kept = self._kept.get(key)
            held = kept.inc.received if kept is not None and kept.digest == digest else 0
            if head.resume:
                return wire.dump(pb.PushReply(accepted=False, held=held))
            if kept is None:
                reason = f"push resumes at chunk {head.start} but the server holds no chunks of it: push from chunk 0"
            elif kept.digest != digest or head.error or head.chunks:
                reason = f"push resumes at chunk {head.start} of another update than the one the server holds"
            elif head.start != held:
                reason = f"push resumes at chunk {head.start}, the server holds {held} chunks of this update"
            else:
                reason = ""
                del self._kept[key]
        if reason:
            raise Refused("OUT_OF_RANGE", reason)
        assert kept is not None
        log.info("event=push_resumed node=%s client=%d chunk=%d", node_id, node.client_id, held)
        return PushIn(self, node_id, node, task, head, kept.inc, kept.size + len(first), adopted=kept.nbytes)

    def keep(self, opened: PushIn, held: Reservation) -> bool:
        """Keep the verified chunks of a cut push, with their budget reservation, for its node to resume;
        whether they were kept (not when there are none, or its round closed, or its node joined again)."""
        inc = opened.inc
        if inc is None or inc.complete or not inc.received:
            return False
        key = (opened.node_id, opened.task.task_id)
        with self._lock:
            if opened.task.closed or self._nodes.get(opened.node_id) is not opened.node:
                return False
            old = self._kept.pop(key, None)
            self._kept[key] = KeptPush(_update_digest(opened.head), inc, opened.size, held.bytes)
            held.bytes = 0
        if old is not None:
            self.budget.give(key[0], old.nbytes)
        opened.inc = None
        log.info("event=push_kept node=%s client=%d chunks=%d", key[0], opened.cid, inc.received)
        return True

    def drop_kept(self, which: Callable[[tuple[str, str]], bool]) -> None:
        """Release the kept chunks of the cut pushes whose (node id, task id) ``which`` selects."""
        with self._lock:
            gone = [(k, self._kept.pop(k)) for k in [k for k in self._kept if which(k)]]
        for (node_id, _), kept in gone:
            self.budget.give(node_id, kept.nbytes)

    def _release(self, key: tuple[str, str]) -> bool:
        """Release the kept chunks of one cut push; whether there were any."""
        with self._lock:
            kept = self._kept.pop(key, None)
        if kept is not None:
            self.budget.give(key[0], kept.nbytes)
        return kept is not None

    def _drop_oldest_kept(self) -> bool:
        """Release the longest-kept cut push (so a push being received fits); False when none is kept."""
        with self._lock:
            oldest = next(iter(self._kept), None)
        if oldest is None:
            return False
        if self._release(oldest):
            log.info("event=push_kept_dropped node=%s reason=budget", oldest[0])
        return True

    def kept_chunks(self) -> dict[tuple[str, str], int]:
        """Verified chunks kept from cut pushes, by (node id, task id)."""
        with self._lock:
            return {k: v.inc.received for k, v in self._kept.items()}

    def deliver(self, task: RoundTask, result: Result, on_set: Callable[[], None] | None = None) -> _Verdict | None:
        """Hand a received result to the round; the verdict its node waits on, None when the round has closed."""
        verdict = _Verdict(on_set=on_set)
        if task.closed:
            return None
        task.results.put((result, verdict))
        self.arrived.set()
        if task.closed:  # closed meanwhile: close_round may have drained the queue before the put
            verdict.set(False, f"round {task.round_num} closed")
        return verdict

    def _task_problem(self, task: RoundTask | None, head: Any, node: _Node) -> str:
        cid = node.client_id
        if task is None or task.closed:
            return f"update for round {head.round} refused: no round is open"
        if head.task_id != task.task_id:
            return (
                f"update for task {head.task_id[:40]!r} (round {head.round}) refused: "
                f"round {task.round_num} of run {self.run_id} is open"
            )
        mine = task.selected(node)
        if not mine:
            return f"client {cid} was not selected in round {task.round_num}"
        if mine & task.done:
            return f"client {cid} already sent its update for round {task.round_num}"
        return ""

    def secagg_limit(self) -> int:
        """The largest secure-aggregation answer the open stage takes (0 when none is open)."""
        sa = self.secagg
        return 0 if sa is None or sa.closed or not sa.stage else sa.max_bytes(sa.stage)

    def secagg_post(self, raw: bytes, md: Metadata, more: Iterable[bytes] = ()) -> bytes:
        """A node's answer to the open secure-aggregation stage: checked, decoded, queued.

        ``raw`` is the signed first message; ``more`` the further parts of an answer too large
        for one message, joined and checked against the digest the first one signs."""
        from fedge.secagg import wire as secagg_wire

        node_id = self._auth("SecAgg", raw, md)
        req = wire.parse(pb.SecAggPost, raw)
        with self._lock:
            node = self._nodes.get(node_id)
        if node is None:
            raise Refused("FAILED_PRECONDITION", "node has not joined this server session")
        node.last_seen = time.time()
        cid, sa = node.client_id, self.secagg
        with self._lock:
            if sa is None or sa.closed or req.task_id != sa.task_id or req.stage != sa.stage:
                reason = f"secure aggregation stage {req.stage[:20]!r} of task {req.task_id[:40]!r} is not open"
            elif cid not in sa.outbox:
                reason = f"client {cid} is not expected in stage {sa.stage} of round {sa.setup.round_num}"
            elif cid in sa.answered:
                reason = f"client {cid} already answered stage {sa.stage} of round {sa.setup.round_num}"
            else:
                reason = ""
                sa.answered.add(cid)
                stage, box = sa.stage, sa.inbox
        if reason:
            self.refusals.refused("SecAgg", "REFUSED", reason, event="secagg_refused", node=node_id, client=cid)
            return wire.dump(pb.SecAggReply(accepted=False, reason=reason))
        assert sa is not None
        msg: Any = None
        message = req.message
        if req.parts > 1:
            try:
                message = _joined(req, more, sa.max_bytes(stage))
            except wire.WireError as exc:
                reason, message = str(exc), b""
        if not reason and len(message) > sa.max_bytes(stage):
            reason = f"{stage} message of {len(message)} bytes exceeds {sa.max_bytes(stage)}"
        elif not reason and message:
            try:
                msg = secagg_wire.unpack(message)
            except secagg_wire.WireError as exc:
                reason = str(exc)
            else:
                if type(msg).__name__ != SECAGG_REPLIES[stage] or msg.client_id != cid:
                    reason = (
                        f"expected {SECAGG_REPLIES[stage]} from client {cid}, got "
                        f"{type(msg).__name__} from client {msg.client_id}"
                    )
                    msg = None
        sa.received_bytes[cid] = sa.received_bytes.get(cid, 0) + len(message)
        box.put((cid, msg))
        if reason:
            self.refusals.refused(
                "SecAgg", "REJECTED", reason, event="secagg_rejected", node=node_id, client=cid, stage=stage
            )
            return wire.dump(pb.SecAggReply(accepted=False, reason=reason))
        return wire.dump(pb.SecAggReply(accepted=msg is not None, reason="" if msg is not None else "withdrew"))

    def open_secagg(self, setup: Any) -> SecAggSession:
        sa = SecAggSession(f"{self.run_id}:{self.session}:{setup.round_num}:secagg", setup)
        self.secagg, self.phase = sa, "secure aggregation"
        return sa

    def secagg_stage(self, sa: SecAggSession, stage: str, outbox: dict[int, bytes]) -> None:
        """Open ``stage``: each client id in ``outbox`` gets its request on its next poll."""
        with self._lock:
            sa.stage, sa.outbox, sa.answered = stage, outbox, set()
            sa.inbox = queue.Queue()
        log.info("event=secagg_stage round=%d stage=%s clients=%d", sa.setup.round_num, stage, len(outbox))
        self.on_change()

    def close_secagg(self, sa: SecAggSession) -> None:
        with self._lock:
            sa.closed = True
            sa.outbox = {}
        self.phase = "aggregating"

    def status_reply(self, raw: bytes, md: Metadata) -> bytes:
        wire.parse(pb.StatusRequest, raw)
        return wire.dump(pb.StatusReply(json=self.status().to_json()))

    def status(self) -> ServerStatus:
        now = time.time()
        with self._lock:
            nodes = tuple(
                NodeStatus(
                    n.node_id,
                    n.client_id,
                    n.profile,
                    n.last_seen,
                    n.live(now, self.node_timeout_s),
                    n.busy,
                    n.relay.clients if n.relay else 0,
                    n.relay.name if n.relay else "",
                )
                for n in sorted(self._nodes.values(), key=lambda n: n.client_id)
            )
        task = self.task
        open_ = [t for t in list(self.tasks.values()) if not t.closed]
        waiting = tuple(sorted(set().union(*(t.client_ids - t.done for t in open_)))) if open_ else ()
        received = 0 if task is None else len(task.done)
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.last_metrics.items()}
        return ServerStatus(
            self.run_id, self.phase, self.round_num, self.rounds, self.min_nodes, nodes, waiting, received, clean
        )

    # -- rounds ------------------------------------------------------------------
    def open_round(
        self,
        round_num: int,
        client_ids: Sequence[int],
        params: Params,
        ins: FitInstructions,
        classes: Sequence[ModelClass] | None = None,
        *,
        version: int | None = None,
    ) -> RoundTask:
        """Open a training task; with ``classes``, each class's nodes get its own part of the model;
        ``version`` stamps it with the model version it carries (asynchronous runs)."""
        task = self._open(round_num, "fit", client_ids, params, encode_instructions(params, ins, version), classes)
        task.version = version
        self.phase = "training"
        log.info("event=round_open round=%d clients=%d bytes=%d", round_num, len(client_ids), _task_bytes(task))
        self.on_change()
        return task

    def open_eval(
        self, round_num: int, client_ids: Sequence[int], params: Params, classes: Sequence[ModelClass] | None = None
    ) -> RoundTask:
        """Ask ``client_ids`` to evaluate ``params`` on their own test data."""
        tree = {"params": list(params), "round": round_num}
        task = self._open(round_num, "evaluate", client_ids, params, tree, classes)
        self.phase = "evaluating"
        log.info("event=eval_open round=%d clients=%d", round_num, len(client_ids))
        self.on_change()
        return task

    def _open(
        self,
        round_num: int,
        kind: str,
        client_ids: Sequence[int],
        params: Params,
        tree: dict[str, Any],
        classes: Sequence[ModelClass] | None = None,
    ) -> RoundTask:
        with self._lock:
            relays = any(n.relay is not None for n in self._nodes.values())
            opened = self._opened[round_num, kind] = self._opened.get((round_num, kind), 0) + 1
        if relays:
            tree = {**tree, "cohort": sorted(int(c) for c in client_ids)}  # a relay trains its selected children
            if self.kappa1 and kind == "fit":
                tree["kappa1"] = self.kappa1  # [hierarchy]'s edge steps, which every relay runs
        # A round opened again in this process (a relay's edge steps) gets its own task id.
        suffix = ("" if kind == "fit" else f":{kind}") + ("" if opened == 1 else f".{opened}")
        task_id = f"{self.run_id}:{self.session}:{round_num}{suffix}"
        ids = frozenset(int(c) for c in client_ids)
        if classes is None:
            header, chunks, reply = self._encode_task(task_id, kind, round_num, tree)
            task = RoundTask(round_num, task_id, header, chunks, ids, ParamSpec.of(params), kind=kind, reply=reply)
        else:
            task = RoundTask(round_num, task_id, pb.BundleHeader(), [], ids, ParamSpec.of(params), kind=kind)
            for c in classes:
                part = {**tree, "params": list(c.params), "model": dict(c.view)}
                one = TaskClass(*self._encode_task(task_id, kind, round_num, part), spec=c.spec)
                task.classes.update(dict.fromkeys(c.client_ids, one))
        self.round_num, self.task = round_num, task
        self.tasks[task.task_id] = task
        return task

    def _encode_task(self, task_id: str, kind: str, round_num: int, tree: Any) -> tuple[Any, list[bytes], bytes]:
        """A task's bundle header, its serialized chunks, and the TRAIN / EVALUATE message announcing it
        (which carries the chunk itself when the bundle is small)."""
        out = wire.encode(tree, self.chunk_size)
        chunks = [wire.dump(c) for c in out.chunks()]
        header = out.header
        del out
        action = pb.PollReply.TRAIN if kind == "fit" else pb.PollReply.EVALUATE
        reply = pb.PollReply(action=action, task_id=task_id, round=round_num, task=header)
        if len(chunks) == 1 and header.total_bytes <= wire.INLINE_BYTES:
            reply.chunks.append(wire.parse(pb.Chunk, chunks[0]))
        return header, chunks, wire.dump(reply)

    def close_round(self, task: RoundTask) -> None:
        task.closed = True
        self.tasks.pop(task.task_id, None)
        self.drop_kept(lambda k: k[1] == task.task_id)
        while True:
            try:
                _, verdict = task.results.get_nowait()
            except queue.Empty:
                break
            verdict.set(False, f"round {task.round_num} closed")
        self.phase = "aggregating" if task.kind == "fit" else "between rounds"

    def record_round(self, metrics: dict[str, Metrics | float | int | str]) -> None:
        self.last_metrics = dict(metrics)
        self.phase = "between rounds"
