"""A load generator: thousands of real nodes in a few processes, to size a server and to test it.

Each simulated node is a real client of the wire protocol: its own Ed25519 key, its own gRPC
channel (its own TCP connection), its own signed Join, Subscribe and Push calls. Nodes of one
process share an asyncio event loop, so one process carries thousands of them. A node
"trains" by replaying a precomputed update — the global model plus a constant step — so
what is measured is the server and the network path, not local training::

    python -m fedge.deploy.loadgen allow --nodes 10000 --out allow.txt     # the fleet's public keys
    python -m fedge.deploy.loadgen run --server 127.0.0.1:9091 --nodes 10000 --processes 4

Keys are derived from ``--seed`` and the node's index, so the allow-list can be written
before the nodes start and both ends agree without a key file per node. ``--churn F`` makes each node,
with probability F each round it is sent a task, drop its connection — half the time before
answering, half after — and come back (join and subscribe again) a moment later.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import random
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedge.deploy import wire
from fedge.deploy.auth import Signer, public_line
from fedge.deploy.proto import pb

PREFIX = "/fedge.deploy.Fedge/"
OPTIONS = [
    ("grpc.max_receive_message_length", wire.MAX_CHUNK + (1 << 20)),
    ("grpc.max_send_message_length", wire.MAX_CHUNK + (1 << 20)),
    ("grpc.enable_retries", 0),
]
RETRY = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INTERNAL,
}
"""What a node retries, as :data:`fedge.deploy.node.RETRY`."""


def node_key(seed: int, index: int) -> Ed25519PrivateKey:
    """Node ``index``'s key in fleet ``seed``: derived, so both ends know it without a file per node."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"fedge-loadgen:{seed}:{index}".encode()).digest())


def write_allow_list(path: Path, nodes: int, seed: int = 0, start: int = 0) -> Path:
    """The allow-list of nodes ``start .. start + nodes - 1`` of fleet ``seed``."""
    lines = (public_line(node_key(seed, i).public_key(), f"load{i}") for i in range(start, start + nodes))
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@dataclass
class Stats:
    """What one process of simulated nodes did."""

    nodes: int = 0
    joined: int = 0
    trained: int = 0
    accepted: int = 0
    refused: int = 0
    evaluated: int = 0
    reconnects: int = 0
    dropped: int = 0
    errors: int = 0
    stopped: int = 0
    sent_bytes: int = 0
    received_bytes: int = 0
    peak_rss_mib: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: Stats) -> None:
        for k, v in asdict(other).items():
            if k == "reasons":
                for r, n in v.items():
                    self.reasons[r] = self.reasons.get(r, 0) + n
            elif k == "peak_rss_mib":
                self.peak_rss_mib = max(self.peak_rss_mib, v)
            else:
                setattr(self, k, getattr(self, k) + v)

    def reason(self, text: str) -> None:
        key = text[:120]
        self.reasons[key] = self.reasons.get(key, 0) + 1


class Replay:
    """The update every node of a process pushes for one task, encoded once: the model plus ``step``."""

    def __init__(self, step: float) -> None:
        self.step = np.float32(step)
        self._task = ""
        self._chunks: list[bytes] = []
        self._header: Any = None

    def encode(self, task_id: str, tree: Any, chunk_size: int) -> tuple[Any, list[bytes]]:
        if task_id != self._task:
            params = [np.asarray(p, np.float32) for p in tree["params"]]
            out = wire.encode(
                {
                    "delta": [np.full_like(p, self.step) for p in params],
                    "num_examples": 1,
                    "metrics": {"train_loss": 0.0},
                    "extras": {},
                    "payload": {},
                },
                chunk_size or wire.DEFAULT_CHUNK,
            )
            self._task, self._header = task_id, out.header
            self._chunks = [pb.PushMessage(chunk=c).SerializeToString() for c in out.chunks()]
        return self._header, self._chunks


class SimNode:
    """One simulated node: join, hold a Subscribe stream, answer each task."""

    def __init__(self, target: str, signer: Signer, partition: int, replay: Replay, stats: Stats, *, churn: float):
        self.target, self.signer, self.partition = target, signer, partition
        self.replay, self.stats, self.churn = replay, stats, churn
        self.session = ""
        self.channel: grpc.aio.Channel | None = None

    async def _unary(self, method: str, msg: Any, timeout: float = 60.0) -> bytes:
        assert self.channel is not None
        body = msg.SerializeToString()
        call = self.channel.unary_unary(PREFIX + method)
        raw: bytes = await call(body, metadata=self.signer.metadata(method, body), timeout=timeout)
        self.stats.sent_bytes += len(body)
        self.stats.received_bytes += len(raw)
        return raw

    async def _retrying(self, method: str, msg: Any) -> bytes:
        for attempt in range(60):
            try:
                return await self._unary(method, msg)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRY:
                    raise
                await asyncio.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
        raise RuntimeError(f"{method}: gave up")

    async def join(self) -> None:
        raw = await self._retrying("Join", pb.JoinRequest(partition=self.partition, profile="loadgen"))
        self.session = pb.JoinReply.FromString(raw).session
        self.stats.joined += 1

    async def run(self, deadline: float, ramp_s: float = 0.0) -> None:
        """Serve until the server says stop or ``deadline`` (monotonic) passes; start within ``ramp_s``.

        Whatever goes wrong ends this node only, counted in the stats with its reason."""
        self.stats.nodes += 1
        await asyncio.sleep(random.uniform(0, ramp_s))
        try:
            await self._serve(deadline)
        except Exception as exc:
            self.stats.errors += 1
            self.stats.reason(f"{type(exc).__name__}: {exc}")

    async def _serve(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.channel = grpc.aio.insecure_channel(self.target, options=OPTIONS)
            step = "join"
            try:
                await self.join()
                step = "subscribe"
                done = await self._follow(deadline)
                if done:
                    self.stats.stopped += 1
                    return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRY:
                    self.stats.errors += 1
                    self.stats.reason(f"{exc.code().name}: {exc.details()}")
                    return
                self.stats.reason(f"reconnect after {step}: {exc.code().name}: {exc.details()}")
            finally:
                await self.channel.close()
            self.stats.reconnects += 1
            await asyncio.sleep(random.uniform(0.05, 0.5))

    async def _follow(self, deadline: float) -> bool:
        """One Subscribe stream; True when the run ended, False to reconnect (churn or a REJOIN)."""
        assert self.channel is not None
        req = pb.PollRequest(session=self.session).SerializeToString()
        stream = self.channel.unary_stream(PREFIX + "Subscribe")
        call = stream(
            req, metadata=self.signer.metadata("Subscribe", req), timeout=max(1.0, deadline - time.monotonic())
        )
        try:
            async for raw in call:
                self.stats.received_bytes += len(raw)
                reply = pb.PollReply.FromString(raw)
                if reply.action == pb.PollReply.STOP:
                    return True
                if reply.action == pb.PollReply.REJOIN:
                    self.stats.reason("reconnect after REJOIN")
                    return False
                if reply.action in (pb.PollReply.TRAIN, pb.PollReply.EVALUATE):
                    drop = reply.action == pb.PollReply.TRAIN and self.churn > 0 and random.random() < self.churn
                    if drop and random.random() < 0.5:
                        self.stats.dropped += 1
                        return False  # vanish mid-round, before answering; come back in a moment
                    await self._answer(reply)
                    if drop:
                        self.stats.dropped += 1
                        return False  # drop the connection after answering
            self.stats.reason("reconnect after the stream ended")
            return False
        finally:
            call.cancel()

    async def _tree(self, reply: Any) -> Any:
        assert self.channel is not None
        inc = wire.Incoming(reply.task, max_bytes=2**34)
        for c in reply.chunks:
            inc.add(c)
        if not inc.complete:
            req = pb.FetchRequest(task_id=reply.task_id, start=inc.received).SerializeToString()
            call = self.channel.unary_stream(PREFIX + "Fetch")
            async for raw in call(req, metadata=self.signer.metadata("Fetch", req), timeout=600):
                self.stats.received_bytes += len(raw)
                inc.add(pb.Chunk.FromString(raw))
        return inc.value()

    async def _answer(self, reply: Any) -> None:
        assert self.channel is not None
        tree = await self._tree(reply)
        if reply.action == pb.PollReply.TRAIN:
            header, chunks = self.replay.encode(reply.task_id, tree, reply.task.chunk_size)
        else:
            out = wire.encode({"num_examples": 1, "loss": 0.0, "accuracy": 1.0, "metrics": {}})
            header, chunks = out.header, [pb.PushMessage(chunk=c).SerializeToString() for c in out.chunks()]
        push = pb.PushHeader(task_id=reply.task_id, round=reply.round, update=header)
        if len(chunks) == 1:  # a small update: its one chunk inside the header message
            push.chunks.append(pb.PushMessage.FromString(chunks[0]).chunk)
            chunks = []
        head = pb.PushMessage(header=push).SerializeToString()

        async def messages() -> Any:
            yield head
            for c in chunks:
                yield c

        for attempt in range(30):
            try:
                call = self.channel.stream_unary(PREFIX + "Push")
                raw = await call(messages(), metadata=self.signer.metadata("Push", head), timeout=600)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRY:
                    raise
                await asyncio.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
        else:
            self.stats.errors += 1
            self.stats.reason("push: gave up")
            return
        self.stats.sent_bytes += len(head) + sum(len(c) for c in chunks)
        rep = pb.PushReply.FromString(raw)
        if reply.action == pb.PollReply.EVALUATE:
            self.stats.evaluated += 1
        else:
            self.stats.trained += 1
        if rep.accepted:
            self.stats.accepted += 1
        else:
            self.stats.refused += 1
            self.stats.reason(rep.reason)


async def _fleet(
    target: str, indices: Sequence[int], seed: int, churn: float, timeout_s: float, ramp_s: float
) -> Stats:
    stats = Stats()
    replay = Replay(1e-3)
    deadline = time.monotonic() + timeout_s
    nodes = [SimNode(target, Signer(node_key(seed, i)), i, replay, stats, churn=churn) for i in indices]
    await asyncio.gather(*(n.run(deadline, ramp_s) for n in nodes))
    stats.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return stats


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


def run_process(
    target: str,
    indices: Sequence[int],
    seed: int = 0,
    churn: float = 0.0,
    timeout_s: float = 600,
    ramp_s: float = 0.0,
) -> Stats:
    """Run nodes ``indices`` of fleet ``seed`` in this process until the server stops them (or the timeout).

    Each node starts at a random moment within ``ramp_s`` seconds."""
    _raise_fd_limit(2 * len(indices) + 256)
    return asyncio.run(_fleet(target, indices, seed, churn, timeout_s, ramp_s))


def _worker(args: tuple[str, list[int], int, float, float, float]) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return asdict(run_process(*args))


RAMP_PER_S = 500
"""Nodes that connect per second by default: thousands opening connections in the same instant get
some of their calls cancelled by the network stack (they retry, but the first round pays for it)."""


def run_fleet(
    target: str,
    nodes: int,
    *,
    processes: int = 4,
    seed: int = 0,
    churn: float = 0.0,
    timeout_s: float = 600,
    ramp_s: float | None = None,
) -> Stats:
    """``nodes`` simulated nodes against ``target`` in ``processes`` processes; their stats summed.

    The nodes connect over ``ramp_s`` seconds (default ``nodes / RAMP_PER_S``), as a fleet does."""
    ramp = nodes / RAMP_PER_S if ramp_s is None else ramp_s
    parts = [list(range(i, nodes, processes)) for i in range(processes)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        results = pool.map(_worker, [(target, p, seed, churn, timeout_s, ramp) for p in parts if p])
    total = Stats()
    for r in results:
        total.add(Stats(**r))
    return total


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m fedge.deploy.loadgen", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    allow = sub.add_parser("allow", help="write the fleet's allow-list")
    allow.add_argument("--nodes", type=int, required=True)
    allow.add_argument("--seed", type=int, default=0)
    allow.add_argument("--out", type=Path, required=True)
    run = sub.add_parser("run", help="run the fleet against a server until it says stop")
    run.add_argument("--server", required=True)
    run.add_argument("--nodes", type=int, required=True)
    run.add_argument("--processes", type=int, default=4)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--churn", type=float, default=0.0)
    run.add_argument("--timeout", type=float, default=600.0)
    run.add_argument("--ramp", type=float, default=None, help="seconds over which the nodes connect")
    a = ap.parse_args(argv)
    if a.command == "allow":
        if a.out.exists():
            print(f"error: {a.out} exists; choose another --out", file=sys.stderr)
            sys.exit(2)
        write_allow_list(a.out, a.nodes, a.seed)
        return
    stats = run_fleet(
        a.server, a.nodes, processes=a.processes, seed=a.seed, churn=a.churn, timeout_s=a.timeout, ramp_s=a.ramp
    )
    print(json.dumps(asdict(stats)), file=sys.stdout, flush=True)


if __name__ == "__main__":
    main()
