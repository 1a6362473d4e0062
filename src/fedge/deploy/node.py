"""``fedge join``: a node that trains for a fedge server.

The node connects outbound only: Join (receives the run's experiment config and its client
id), then one Subscribe stream — which is also its heartbeat — on which the server pushes
each task the moment it opens. For a training task the node takes the global model (inline
when it fits one chunk, else Fetched in checksummed chunks, resumed from the last verified
one), runs the same :func:`fedge.clients.base.run_fit` as a simulated client, and Pushes its
update back in chunks; for an evaluation task it evaluates the model on its own test data
(with its personal model, when its strategy keeps one) and Pushes the result. Lost
connections are retried with exponential backoff and jitter; a restarted server is rejoined.
The client's own state (SCAFFOLD's ``c_i``) is kept in a local file,
so a restarted node carries on where it was.

With a NumPy model this module needs only numpy, grpcio, protobuf and cryptography.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from fedge.clients.base import Client, ClientData, Learner, LearnerClient, run_fit
from fedge.config.schema import Experiment, from_dict
from fedge.core.errors import ConfigError, DataError, TransportError
from fedge.core.types import ClientContext, FitInstructions, TrainConfig, client_rng
from fedge.deploy import wire
from fedge.deploy.auth import Signer
from fedge.deploy.proto import pb
from fedge.strategies.base import Strategy

log = logging.getLogger("fedge.deploy.node")
SECAGG_STATE = "secagg"
"""``fedge.secagg.client.STATE_KEY``, spelled here so a node without it imports nothing."""
EDGE_STEP = "edge_step"
"""``FitInstructions.config`` key a relay (``fedge relay``) sets to the edge step ``k`` it runs."""
EDGE_STREAM = 0x4E1A0
"""``fedge.hierarchy.relays.EDGE_STREAM``: edge step ``k >= 1`` trains with stream ``EDGE_STREAM + k``,
as the simulated relays do (spelled here so a node imports nothing of the hierarchy)."""
PREFIX = "/fedge.deploy.Fedge/"
RETRY = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,
}
SECAGG_PART = 4 << 20
"""A secure-aggregation answer larger than this travels in parts of this size (no gRPC message limit)."""
UNARY_DEADLINE_S = 30.0
"""Deadline of each Join, Poll and SecAgg call."""
PLAINTEXT = "no CA given: pass --ca FILE (the server's CA) for TLS, or --insecure for plaintext on a trusted network"


class Stopped(TransportError):
    """The node was asked to stop (:meth:`Node.stop`, SIGTERM)."""


ClientFactory = Callable[[Experiment, int], Client]


@dataclass
class Backoff:
    """Exponential backoff with full jitter; gives up after ``give_up_s`` without success."""

    base_s: float = 0.2
    max_s: float = 5.0
    give_up_s: float = 300.0

    def delays(self) -> Iterator[float]:
        start, attempt = time.monotonic(), 0
        while time.monotonic() - start < self.give_up_s:
            yield random.uniform(0, min(self.max_s, self.base_s * 2**attempt))
            attempt += 1


def load_experiment(text: str) -> Experiment:
    """The run's experiment; the optional parts of the sections it holds are imported as they are read."""
    return from_dict(tomllib.loads(text))


def partition_client(exp: Experiment, cid: int) -> Client:
    """Client ``cid`` of the experiment's own data: its ``[data] loader`` called for ``cid`` only, or its dataset."""
    from fedge.federation import load_dataset

    d = exp.data
    if d.loader:
        from fedge.data.usercode_source import load_client

        x, y, xt, yt = load_client(d.loader, cid, num_clients=d.num_clients, seed=exp.seed)
        classes = exp.model.num_classes or int(max(y.max(initial=0), yt.max(initial=0))) + 1
        return LearnerClient(cid, exp_learner(exp, x.shape[1:], classes), ClientData(x, y, xt, yt))
    data = load_dataset(exp)
    return LearnerClient(
        cid, exp_learner(exp, data.feature_shape, exp.model.num_classes or data.num_classes), data.client(cid)
    )


def exp_learner(exp: Experiment, feature_shape: Sequence[int], num_classes: int) -> Learner:
    """The experiment's learner (built-in model or ``[model] factory``, ``[training] loss``) for this data."""
    from fedge.models import build_learner

    m = exp.model
    return build_learner(
        m.name, m.framework, feature_shape, num_classes, m.hidden, factory=m.factory, loss=exp.training.loss
    )


def file_client(path: str, label: str = "label", num_classes: int = 0) -> ClientFactory:
    """A factory of clients on a local CSV/Parquet/npz file (the device's own data)."""

    def make(exp: Experiment, cid: int) -> Client:
        from fedge.data.loaders import load_files

        x, y, _ = load_files(path, label=label)
        n_test = int(len(y) * exp.data.test_fraction)
        order = np.random.default_rng([exp.seed, cid]).permutation(len(y))
        te, tr = order[:n_test], order[n_test:]
        learner = exp_learner(exp, x.shape[1:], num_classes or exp.model.num_classes or int(y.max()) + 1)
        return LearnerClient(cid, learner, ClientData(x[tr], y[tr], x[te], y[te]))

    return make


class StateFile:
    """The client's persistent state on disk, written atomically.

    It keeps the state from *before* the last round trained as well as after it, so a
    round the server re-runs after its own crash starts from the same state.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[int, dict[str, Any], dict[str, Any]]:
        if not self.path.is_file():
            return 0, {}, {}
        try:
            data = self.path.read_bytes()
            n = int.from_bytes(data[:4], "little")
            header = wire.parse(pb.BundleHeader, data[4 : 4 + n])
            body = data[4 + n :]
            size = header.chunk_size
            chunks = (pb.Chunk(index=i, data=body[i * size : (i + 1) * size]) for i in range(len(header.chunk_sha256)))
            tree = wire.decode(header, chunks, max_bytes=len(body))
            return int(tree["round"]), dict(tree["before"]), dict(tree["after"])
        except (wire.WireError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{self.path}: unreadable client state ({exc})") from None

    def save(self, round_num: int, before: dict[str, Any], after: dict[str, Any]) -> None:
        out = wire.encode({"round": round_num, "before": before, "after": after})
        head = out.header.SerializeToString()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(len(head).to_bytes(4, "little") + head + bytes(out.body))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class MemoryState:
    """Client state kept in memory only: a node built without a state folder."""

    def __init__(self) -> None:
        self._saved: tuple[int, dict[str, Any], dict[str, Any]] = (0, {}, {})

    def load(self) -> tuple[int, dict[str, Any], dict[str, Any]]:
        return self._saved

    def save(self, round_num: int, before: dict[str, Any], after: dict[str, Any]) -> None:
        self._saved = (round_num, before, after)


def decode_instructions(tree: Any) -> tuple[list[np.ndarray], FitInstructions]:
    if not isinstance(tree, dict) or not isinstance(tree.get("params"), list):
        raise wire.WireError("task is not a map with params")
    train = dict(tree["train"])
    known = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in train.items() if k in known})
    per_client = {int(c): dict(o) for c, o in tree.get("per_client") or []}
    params = [np.asarray(p, dtype=np.float32) for p in tree["params"]]
    return params, FitInstructions(
        round_num=int(tree["round"]), train=cfg, config=dict(tree.get("config") or {}), per_client=per_client
    )


class Node:
    """One device's side of a federation."""

    def __init__(
        self,
        server: str,
        signer: Signer,
        *,
        partition: int = -1,
        client_factory: ClientFactory | None = None,
        state_dir: Path | None = None,
        root_ca: bytes | None = None,
        cert_chain: tuple[bytes, bytes] | None = None,
        profile: str = "",
        backoff: Backoff | None = None,
        max_task_bytes: int = 2**33,
        insecure: bool = False,
        stream_deadline_s: float = 3600.0,
    ) -> None:
        """``root_ca`` turns on TLS; a plaintext channel needs ``insecure=True``.

        Every call has a deadline: :data:`UNARY_DEADLINE_S` for short calls and
        ``stream_deadline_s`` for a model's Fetch or an update's Push, generous because a
        slow link is slow, not stalled (the server cuts a stalled stream after its ``stall_s``).
        """
        if root_ca is None and cert_chain is None and not insecure:
            raise ConfigError(PLAINTEXT)
        self.server, self.signer, self.partition = server, signer, partition
        self.stream_deadline_s = stream_deadline_s
        self.client_factory = client_factory or partition_client
        self.state_dir = state_dir
        self.profile = profile
        self.backoff = backoff or Backoff()
        self.max_task_bytes = max_task_bytes
        opts = [
            ("grpc.max_receive_message_length", wire.MAX_CHUNK + (1 << 20)),
            ("grpc.max_send_message_length", wire.MAX_CHUNK + (1 << 20)),
            # HTTP/2 pings find a server whose link died without a word; the stream then ends and is retried.
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        if root_ca is not None or cert_chain is not None:
            key, cert = cert_chain or (None, None)
            creds = grpc.ssl_channel_credentials(root_ca, key, cert)
            self.channel = grpc.secure_channel(server, creds, options=opts)
        else:
            self.channel = grpc.insecure_channel(server, options=opts)
        self.session = ""
        self.heartbeat_s = 1.0
        self.client_id = -1
        self.client: Client | None = None
        self.rounds_trained = 0
        self._exchange_state: dict[str, Any] = {}
        """The round's state for a protocol's stages (with [secagg]: the fixed-point input words
        and the round's secrets); only in memory, never saved, and the words never leave the node."""
        self._secagg_sent: tuple[tuple[int, str, str], bytes] | None = None
        self._stop = threading.Event()
        self._call: Any = None
        """The Subscribe stream being followed: :meth:`stop` cancels it."""
        self._heard = False

    # -- calls -------------------------------------------------------------------
    def _unary(self, method: str, msg: Any) -> bytes:
        body = msg.SerializeToString()
        stub = self.channel.unary_unary(PREFIX + method)
        return stub(body, metadata=self.signer.metadata(method, body), timeout=UNARY_DEADLINE_S)  # type: ignore[no-any-return]

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        last: grpc.RpcError | None = None
        for delay in self.backoff.delays():
            if self._stop.is_set():
                raise Stopped(f"{what}: node stopped")
            try:
                return fn()
            except grpc.RpcError as exc:
                if exc.code() not in RETRY:
                    raise TransportError(f"{what} refused: {exc.code().name}: {exc.details()}") from None
                last = exc
                log.info("event=retry what=%s code=%s wait_s=%.2f", what, exc.code().name, delay)
                self._stop.wait(delay)
        detail = last.details() if last is not None else "no attempt"
        raise TransportError(f"{what}: server {self.server} unreachable ({detail})")

    def join(self) -> Experiment:
        req = pb.JoinRequest(partition=self.partition, profile=self.profile)
        rep = wire.parse(pb.JoinReply, self._retrying("join", lambda: self._unary("Join", req)))
        self.session, self.client_id = rep.session, rep.client_id
        self.heartbeat_s = rep.heartbeat_s
        self.run_id = rep.run_id
        self.joined(rep)
        log.info("event=joined server=%s client=%d run=%s", self.server, rep.client_id, rep.run_id)
        return self.exp

    def joined(self, rep: Any) -> None:
        """Build this node's client for the run and client id of the JoinReply ``rep`` (once per client id)."""
        if self.client is None or self.client.client_id != rep.client_id:
            from fedge.federation import client_side

            self.exp = load_experiment(rep.config_toml)
            self.client = self.client_factory(self.exp, rep.client_id)
            self._full: Client = self.client
            self._template: list[np.ndarray] | None = None
            self._narrow: dict[float, Client] = {}
            self.strategy: Strategy
            self.strategy, self.pipeline = client_side(self.exp)
            self.state: StateFile | MemoryState = (
                MemoryState()
                if self.state_dir is None
                else StateFile(self.state_dir / f"fedge-client-{rep.client_id}.state")
            )

    def poll(self, busy: bool = False) -> Any:
        req = pb.PollRequest(session=self.session, busy=busy)
        reply: Any = wire.parse(pb.PollReply, self._retrying("poll", lambda: self._unary("Poll", req)))
        return reply

    def stop(self) -> None:
        """Ask :meth:`run` to return at its next step (it finishes a training in progress)."""
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()

    # -- the loop ----------------------------------------------------------------
    def run(self) -> int:
        """Serve the federation until the server says stop; returns the rounds trained."""
        try:
            self.join()
            delays = self.backoff.delays()
            while not self._stop.is_set():
                try:
                    if self._follow():
                        return self.rounds_trained
                    delays = self.backoff.delays()
                except grpc.RpcError as exc:
                    if self._stop.is_set():
                        break
                    if exc.code() not in RETRY:
                        raise TransportError(f"subscribe refused: {exc.code().name}: {exc.details()}") from None
                    if self._heard:
                        delays, self._heard = self.backoff.delays(), False
                    delay = next(delays, None)
                    if delay is None:
                        raise TransportError(f"subscribe: server {self.server} unreachable ({exc.details()})") from None
                    log.info("event=retry what=subscribe code=%s wait_s=%.2f", exc.code().name, delay)
                    self._stop.wait(delay)
            return self.rounds_trained
        except Stopped:
            return self.rounds_trained
        finally:
            self._stop.set()
            self.channel.close()

    def _follow(self) -> bool:
        """Follow one Subscribe stream to its end, doing what it asks; True when the server said stop."""
        req = pb.PollRequest(session=self.session).SerializeToString()
        stub = self.channel.unary_stream(PREFIX + "Subscribe")
        call = stub(req, metadata=self.signer.metadata("Subscribe", req), timeout=self.stream_deadline_s)
        self._call = call
        try:
            for raw in call:
                self._heard = True
                reply = wire.parse(pb.PollReply, raw)
                if reply.action == pb.PollReply.STOP:
                    log.info("event=stop message=%r", reply.message)
                    return True
                if reply.action == pb.PollReply.REJOIN:
                    self.join()
                    return False
                if reply.action == pb.PollReply.SECAGG:
                    self.secagg(reply)
                elif reply.action == pb.PollReply.TRAIN:
                    self.train(reply)
                elif reply.action == pb.PollReply.EVALUATE:
                    self.evaluate(reply)
                if self._stop.is_set():
                    break
            return False
        finally:
            self._call = None
            call.cancel()

    def fetch(self, reply: Any) -> Any:
        """The task's tensors: the chunks that came inline, then the rest Fetched (resumed where a cut one stopped)."""
        inc = wire.Incoming(reply.task, max_bytes=self.max_task_bytes)
        for c in reply.chunks:
            inc.add(c)

        def attempt() -> None:
            req = pb.FetchRequest(task_id=reply.task_id, start=inc.received).SerializeToString()
            stream = self.channel.unary_stream(PREFIX + "Fetch")
            for raw in stream(req, metadata=self.signer.metadata("Fetch", req), timeout=self.stream_deadline_s):
                inc.add(wire.parse(pb.Chunk, raw))

        if not inc.complete:
            self._retrying("fetch", attempt)
        return inc.value()

    def train(self, reply: Any) -> None:
        try:
            task = self.fetch(reply)
            params, ins = decode_instructions(task)
            params = self._whole(params, task)
        except TransportError as exc:
            log.warning("event=task_lost round=%d reason=%r", reply.round, str(exc))
            return
        saved_round, before, after = self.state.load()
        start = before if ins.round_num <= saved_round else after
        state = _copy(start)
        step = int(ins.config.get(EDGE_STEP, 0) or 0)
        rng = (
            client_rng(self.exp.seed, ins.round_num, self.client_id)
            if step == 0
            else client_rng(self.exp.seed, ins.round_num, self.client_id, EDGE_STREAM + step)
        )
        ctx = ClientContext(client_id=self.client_id, round_num=ins.round_num, rng=rng, state=state)
        assert self.client is not None
        self._exchange_state, self._secagg_sent = {}, None
        tree: Any = None
        error = ""
        try:
            update = run_fit(self.client, params, ins, ctx, strategy=self.strategy, pipeline=self.pipeline)
            if SECAGG_STATE in state:
                # Secure aggregation: the words stay here, out of the saved state; the server gets
                # them only masked, in the protocol's masked-input stage.
                self._exchange_state = {SECAGG_STATE: state.pop(SECAGG_STATE)}
            tree = {
                "delta": list(update.delta),
                "num_examples": int(update.num_examples),
                "metrics": update.metrics,
                "extras": {k: list(v) for k, v in update.extras.items()},
                "payload": update.payload,
            }
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("event=train_failed round=%d error=%r", ins.round_num, error)
        rep = self._push(reply, ins.round_num, tree, error)
        if rep is None:
            return
        if rep.accepted and not error:
            self.rounds_trained += 1
            self._save_state(ins.round_num, start, state)
        log.info("event=pushed round=%d accepted=%s reason=%r", ins.round_num, rep.accepted, rep.reason)

    def evaluate(self, reply: Any) -> None:
        """Evaluate the task's model on this node's own test data, as a simulated client would; Push the result."""
        try:
            tree = self.fetch(reply)
            if not isinstance(tree, dict) or not isinstance(tree.get("params"), list):
                raise wire.WireError("evaluation task is not a map with params")
            params = self._whole([np.asarray(p, dtype=np.float32) for p in tree["params"]], tree)
        except TransportError as exc:
            log.warning("event=task_lost round=%d reason=%r", reply.round, str(exc))
            return
        _, _, after = self.state.load()
        ctx = ClientContext(
            client_id=self.client_id,
            round_num=int(reply.round),
            rng=client_rng(self.exp.seed, int(reply.round), self.client_id, 1),
            state=_copy(after),
        )
        assert self.client is not None
        result: Any = None
        error = ""
        try:
            r = self.strategy.client_evaluate(self.client, params, ctx)
            result = {
                "num_examples": int(r.num_examples),
                "loss": float(r.loss),
                "accuracy": float(r.accuracy),
                "metrics": {k: float(v) for k, v in r.metrics.items()},
            }
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("event=evaluate_failed round=%d error=%r", reply.round, error)
        rep = self._push(reply, int(reply.round), result, error)
        if rep is not None:
            log.info("event=evaluated round=%d accepted=%s reason=%r", reply.round, rep.accepted, rep.reason)

    def _whole(self, params: list[np.ndarray], tree: dict[str, Any]) -> list[np.ndarray]:
        """The whole model a task of one model class stands for (:mod:`fedge.deploy.classes`): its blocks over
        the model's initial parameters, with the client this node trains for the class (HeteroFL: its width).
        A task without a class holds the whole model already."""
        view = tree.get("model")
        if view is None:
            return params
        from fedge.deploy.classes import embed

        if not isinstance(view, dict):
            raise wire.WireError("the task's model class is not a map")
        if self._template is None:
            learner = getattr(self._full, "learner", None)
            if learner is None:
                raise wire.WireError(f"strategy {self.strategy.name!r} needs the node's model (a learner client)")
            self._template = learner.init_params(self.exp.seed)
        from fedge.personalization import node_client

        try:
            self.strategy.bind_view(self.client_id, view)
            whole = embed(self._template, params)
            self.client = node_client(self.exp, self.strategy, self._full, self._narrow)
        except (ConfigError, ValueError, TypeError) as exc:
            raise wire.WireError(f"the task's model class does not fit this node: {exc}") from None
        return whole

    def _push(self, reply: Any, round_num: int, tree: Any, error: str) -> Any:
        """Push ``tree`` (or the failure ``error``) for the task of ``reply``; the server's PushReply, None if lost.

        A push cut after some of its chunks went out asks the server how many of them it holds
        (a header with ``resume``) and sends only the rest, from ``start``; each chunk's SHA-256 in
        the signed header still checks every chunk of the update the server assembles. A resume
        the server refuses (it dropped what it held meanwhile) is followed by the whole push.
        """
        if error:
            out = wire.encode([])
            header = pb.PushHeader(task_id=reply.task_id, round=round_num, error=error)
        else:
            out = wire.encode(tree, reply.task.chunk_size or wire.DEFAULT_CHUNK)
            header = pb.PushHeader(task_id=reply.task_id, round=round_num, update=out.header)
            if len(out.header.chunk_sha256) == 1 and out.header.total_bytes <= wire.INLINE_BYTES:
                header.chunks.extend(out.chunks())  # one message: the header carries the update
        streamed = not error and not header.chunks
        sent = [0]
        """Chunks handed to gRPC by the attempts so far: after a cut, some may be on the server."""

        def call(head: bytes, start: int = 0, body: bool = True) -> bytes:
            def messages() -> Iterator[bytes]:
                yield head
                if body and streamed:
                    for c in out.chunks(start):
                        sent[0] += 1
                        yield pb.PushMessage(chunk=c).SerializeToString()

            stub = self.channel.stream_unary(PREFIX + "Push")
            md = self.signer.metadata("Push", head)
            return stub(messages(), metadata=md, timeout=self.stream_deadline_s)  # type: ignore[no-any-return]

        def attempt() -> bytes:
            start = 0
            if streamed and sent[0]:
                rep = wire.parse(pb.PushReply, call(_head(header, resume=True), body=False))
                if rep.reason:
                    return wire.dump(rep)  # the server no longer takes this update
                start = rep.held
                log.info("event=push_resume round=%d chunk=%d", round_num, start)
            try:
                return call(_head(header, start=start), start)
            except grpc.RpcError as exc:
                if not start or exc.code() != grpc.StatusCode.OUT_OF_RANGE:
                    raise
                log.info("event=push_restart round=%d reason=%r", round_num, exc.details())
                return call(_head(header))  # what the server held is gone (its budget needed room)

        try:
            return wire.parse(pb.PushReply, self._retrying("push", attempt))
        except TransportError as exc:
            log.warning("event=push_failed round=%d reason=%r", round_num, str(exc))
            return None

    def secagg(self, reply: Any) -> None:
        """Answer one stage of secure aggregation with this node's own keys, shares and words.

        The answer comes from the pipeline's responder for the stage — the same handler the
        in-process transport calls in simulation. Anything this node cannot or will not
        answer (no input for that round, a malformed or tampered request) is answered with
        an empty message: it withdraws and the server counts it as dropped at that stage.
        """
        from fedge.core.errors import FedgeError
        from fedge.secagg import wire as secagg_wire
        from fedge.secagg.client import ProtocolError
        from fedge.transport.exchange import responder_for

        key = (int(reply.round), str(reply.secagg_stage), str(reply.task_id))
        if self._secagg_sent is not None and self._secagg_sent[0] == key:
            out = self._secagg_sent[1]  # the server did not get our answer: send it again
        else:
            try:
                msg = secagg_wire.unpack(reply.secagg_message)
                if getattr(msg, "round_num", None) != key[0]:
                    raise ProtocolError(f"a {type(msg).__name__} in round {key[0]}'s stage {key[1]!r}")
                responder = responder_for(key[1], self.pipeline.transforms)
                if responder is None:
                    raise ProtocolError(f"no transform of this node answers stage {key[1]!r}")
                answer = responder.respond(key[1], msg, client_id=self.client_id, state=self._exchange_state)
                out = secagg_wire.pack(answer)
            except (FedgeError, ValueError, TypeError, KeyError, IndexError) as exc:
                # a malformed request from the server must not stop the node: it withdraws
                log.warning("event=secagg_withdraw round=%d stage=%s reason=%r", key[0], key[1], str(exc))
                out = b""
            self._secagg_sent = (key, out)
        try:
            rep = wire.parse(pb.SecAggReply, self._retrying("secagg", lambda: self._post(reply.task_id, key, out)))
        except TransportError as exc:
            log.warning("event=secagg_failed round=%d stage=%s reason=%r", key[0], key[1], str(exc))
            return
        log.info("event=secagg round=%d stage=%s accepted=%s reason=%r", key[0], key[1], rep.accepted, rep.reason)

    def _post(self, task_id: str, key: tuple[int, str, str], out: bytes) -> bytes:
        """Send one secure-aggregation answer: in one message, or in parts of ``SECAGG_PART`` bytes
        (the first, signed, names the count and the SHA-256 of the whole) when it is larger."""
        if len(out) <= SECAGG_PART:
            return self._unary("SecAgg", pb.SecAggPost(task_id=task_id, round=key[0], stage=key[1], message=out))
        slices = [out[i : i + SECAGG_PART] for i in range(0, len(out), SECAGG_PART)]
        first = pb.SecAggPost(
            task_id=task_id,
            round=key[0],
            stage=key[1],
            message=slices[0],
            parts=len(slices),
            sha256=hashlib.sha256(out).digest(),
        ).SerializeToString()
        rest = [
            pb.SecAggPost(task_id=task_id, round=key[0], stage=key[1], message=m, part=i).SerializeToString()
            for i, m in enumerate(slices[1:], 1)
        ]
        stub = self.channel.stream_unary(PREFIX + "SecAgg")
        md = self.signer.metadata("SecAgg", first)
        return stub(iter([first, *rest]), metadata=md, timeout=self.stream_deadline_s)  # type: ignore[no-any-return]

    def _save_state(self, round_num: int, before: dict[str, Any], after: dict[str, Any]) -> None:
        try:
            self.state.save(round_num, before, after)
        except (wire.WireError, OSError) as exc:
            log.warning("event=state_not_saved reason=%r", str(exc))


def _head(header: Any, **fields: Any) -> bytes:
    """The first message of one Push call: ``header`` with ``fields`` set (``start``, ``resume``)."""
    h = pb.PushHeader()
    h.CopyFrom(header)
    for k, v in fields.items():
        setattr(h, k, v)
    return wire.dump(pb.PushMessage(header=h))


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (
            np.array(v, copy=True)
            if isinstance(v, np.ndarray)
            else [np.array(x, copy=True) for x in v]
            if isinstance(v, list)
            else v
        )
        for k, v in state.items()
    }
