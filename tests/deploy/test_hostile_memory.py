"""Server memory is never taken on a node's word: buffers grow with verified chunks, within a budget.

An allowed, selected node that sends a header claiming a gigabyte and then nothing costs the
server no more than what it really sent, and does not hold the decode slots honest nodes
need; a push that does not fit the in-flight byte budget is refused with the reason and the
node can retry once the budget is free again.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedge.core.errors import TransportError
from fedge.core.types import FitInstructions, TrainConfig
from fedge.deploy import wire
from fedge.deploy.auth import Signer, Verifier, load_private, new_keys
from fedge.deploy.client import fetch_status
from fedge.deploy.config import DeployConfig
from fedge.deploy.node import Backoff, Node
from fedge.deploy.proto import pb
from fedge.deploy.server import start_grpc
from fedge.deploy.service import ByteBudget, FedgeService
from fedge.deploy.store import Store

from .conftest import FEDGE, free_port

PREFIX = "/fedge.deploy.Fedge/"
MiB = 2**20


def claimed_header(nbytes: int, chunk: int = wire.DEFAULT_CHUNK) -> Any:
    """A well-formed bundle header for one float32 tensor of ``nbytes`` (checksums of zeros)."""
    head = pb.BundleHeader(chunk_size=chunk, total_bytes=nbytes)
    head.tree.map.SetInParent()
    for key in ("delta", "num_examples"):
        head.tree.map.keys.append(key)
    delta = head.tree.map.values.add()
    delta.list.items.add().tensor = 0
    head.tree.map.values.add().i = 10
    head.tensors.add(dtype="float32", shape=[nbytes // 4])
    zero = hashlib.sha256(bytes(chunk)).digest()
    head.chunk_sha256.extend([zero] * -(-nbytes // chunk))
    return head


def call(channel: grpc.Channel, signer: Signer, method: str, msg: Any) -> bytes:
    body = msg.SerializeToString()
    out: bytes = channel.unary_unary(PREFIX + method)(body, metadata=signer.metadata(method, body), timeout=10)
    return out


def join_and_wait_for_task(channel: grpc.Channel, signer: Signer, partition: int, timeout: float = 30) -> Any:
    rep = pb.JoinReply.FromString(call(channel, signer, "Join", pb.JoinRequest(partition=partition)))
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        poll = pb.PollReply.FromString(call(channel, signer, "Poll", pb.PollRequest(session=rep.session)))
        if poll.action == pb.PollReply.TRAIN:
            return poll
        time.sleep(0.1)
    raise AssertionError("no round task was offered")


def open_push(
    channel: grpc.Channel, signer: Signer, task_id: str, header: Any, chunks: list[Any], hold: threading.Event
) -> grpc.Future:
    """A Push that sends its header and ``chunks``, then keeps the stream open until ``hold`` is set."""
    head = wire.dump(pb.PushMessage(header=pb.PushHeader(task_id=task_id, round=1, update=header)))

    def messages() -> Iterator[bytes]:
        yield head
        for c in chunks:
            yield wire.dump(pb.PushMessage(chunk=c))
        hold.wait(120)

    stub = channel.stream_unary(PREFIX + "Push")
    fut: grpc.Future = stub.future(messages(), metadata=signer.metadata("Push", head), timeout=120)
    return fut


def memory_mib(pid: int) -> tuple[float, float]:
    """The process's resident set now and at its peak (VmRSS, VmHWM), MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def test_incoming_holds_only_the_chunks_that_arrived() -> None:
    header = claimed_header(1 << 30)
    tracemalloc.start()
    try:
        inc = wire.Incoming(header, max_bytes=2**31)
        assert tracemalloc.get_traced_memory()[1] < 1 * MiB
        zero = bytes(wire.DEFAULT_CHUNK)
        for i in range(3):
            inc.add(pb.Chunk(index=i, data=zero))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert inc.received_bytes == 3 * wire.DEFAULT_CHUNK and not inc.complete
    assert peak < 4 * wire.DEFAULT_CHUNK + MiB, f"{peak / MiB:.1f} MiB held for 3 chunks of a 1 GiB claim"
    with pytest.raises(wire.WireError, match="incomplete"):
        inc.value()


def test_incoming_builds_writable_arrays_equal_to_what_was_sent() -> None:
    tree = {"a": [np.arange(10, dtype=np.float32), np.ones((3, 0), np.int64)], "b": np.arange(7, dtype=np.uint8)}
    out = wire.encode(tree, chunk_size=8)
    inc = wire.Incoming(out.header, max_bytes=1 << 20)
    for c in out.chunks():
        inc.add(c)
    got = inc.value()
    np.testing.assert_array_equal(got["a"][0], tree["a"][0])
    assert got["a"][1].shape == (3, 0) and got["b"].tolist() == list(range(7))
    got["a"][0] += 1
    assert inc.value()["a"][0][0] == 1.0, "value() is built once and shared"


def test_the_budget_grants_chunk_by_chunk_and_refuses_what_does_not_fit() -> None:
    b = ByteBudget(total=100, per_node=60)
    assert b.take("a", 50) == "" and b.take("b", 40) == ""
    assert "in-flight update budget" in b.take("b", 20)
    assert "above its limit of 60" in b.take("a", 20)
    b.give("a", 50)
    assert b.take("b", 20) == "" and b.used == 60
    b.give("b", 60)
    assert b.used == 0


@pytest.mark.integration
def test_streams_claiming_a_gigabyte_cost_no_memory_and_honest_updates_still_count(
    tmp_path: Path, make_keys: Any, write_experiment: Any
) -> None:
    keys, allow = make_keys(2)
    port = free_port()
    exp = write_experiment(allow=allow, clients=2, rounds=1, port=port, timeout=3.0)
    log = tmp_path / "server.log"
    target = f"127.0.0.1:{port}"
    with open(log, "wb") as f:
        server = subprocess.Popen([*FEDGE, "serve", str(exp)], stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path)
    hold = threading.Event()
    streams: list[grpc.Future] = []
    honest = Node(target, Signer(load_private(keys[1])), partition=1, backoff=Backoff(give_up_s=30), insecure=True)
    channel = grpc.insecure_channel(target)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and server.poll() is None:
            with suppress(Exception):
                fetch_status(target, timeout=1, insecure=True)
                break
            time.sleep(0.1)
        threading.Thread(target=honest.run, daemon=True).start()
        attacker = Signer(load_private(keys[0]))
        task = join_and_wait_for_task(channel, attacker, 0)
        before, _ = memory_mib(server.pid)
        streams += [open_push(channel, attacker, task.task_id, claimed_header(1 << 30), [], hold) for _ in range(4)]
        peak = before
        status = None
        end = time.monotonic() + 45
        while time.monotonic() < end and server.poll() is None:
            with suppress(KeyError, OSError):
                peak = max(peak, memory_mib(server.pid)[1])
            with suppress(TransportError):
                status = fetch_status(target, timeout=2, insecure=True)
            if status is not None and status.last_metrics.get("round") == 1:
                break
            time.sleep(0.2)
        assert peak - before < 64, f"server memory grew {peak - before:.0f} MiB for 4 streams that sent nothing"
        assert status is not None and status.last_metrics.get("round") == 1, "the round did not finish"
        assert status.last_metrics["participants"] == 1, status.last_metrics
    finally:
        hold.set()
        for s in streams:
            s.cancel()
        honest.stop()
        channel.close()
        with suppress(subprocess.TimeoutExpired):
            server.wait(30)
        if server.poll() is None:
            server.kill()
            server.wait()


def shut(svc: FedgeService, channel: grpc.Channel, srv: Any, hold: threading.Event) -> None:
    """Release the held pushes, close the open round (freeing what it kept), stop the server."""
    hold.set()
    if svc.task is not None:
        svc.close_round(svc.task)
    channel.close()
    srv.stop(0.5).wait()
    svc.store.close()


def test_a_push_beyond_the_budget_is_refused_and_the_server_keeps_serving(tmp_path: Path) -> None:
    key_a, pub_a = new_keys(tmp_path, "a")
    key_b, pub_b = new_keys(tmp_path, "b")
    allow = tmp_path / "allow.txt"
    allow.write_text(pub_a.read_text() + pub_b.read_text())
    svc = FedgeService(
        store=Store(tmp_path / "s.db"),
        verifier=Verifier(allow),
        run_id="budget",
        config_toml="",
        num_clients=2,
        rounds=1,
        min_nodes=2,
        max_update_bytes=MiB,
        max_inflight_bytes=MiB,
    )
    srv, port = start_grpc(svc, DeployConfig(port=0, insecure=True))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    a, b = Signer(load_private(key_a)), Signer(load_private(key_b))
    hold = threading.Event()
    try:
        for i, s in enumerate((a, b)):
            call(channel, s, "Join", pb.JoinRequest(partition=i))
        params = [np.zeros(MiB // 4, np.float32)]
        task = svc.open_round(1, [0, 1], params, FitInstructions(round_num=1, train=TrainConfig()))
        update = wire.encode(
            {"delta": [np.ones(MiB // 4, np.float32)], "num_examples": 3, "metrics": {}, "extras": {}, "payload": {}},
            chunk_size=256 * 1024,
        )
        chunks = list(update.chunks())
        slow = open_push(channel, a, task.task_id, update.header, chunks[:3], hold)
        end = time.monotonic() + 20
        while svc.budget.used < 3 * 256 * 1024 and time.monotonic() < end:
            time.sleep(0.02)
        assert svc.budget.used == 3 * 256 * 1024
        done = threading.Event()
        refused = open_push(channel, b, task.task_id, update.header, chunks, done)
        with pytest.raises(grpc.RpcError) as err:
            refused.result(timeout=20)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "in-flight update budget" in (err.value.details() or "")
        assert fetch_status(f"127.0.0.1:{port}", timeout=5, insecure=True).round == 1
        hold.set()
        slow.cancel()
        while len(svc.kept_chunks()) < 2 and time.monotonic() < end:
            time.sleep(0.02)
        # the cancelled stream's verified chunks, and the refused one's first, are kept to resume, and stay counted
        assert sorted(svc.kept_chunks().values()) == [1, 3]
        assert svc.budget.used == 4 * 256 * 1024

        def answer() -> None:
            got, verdict = task.results.get(timeout=20)
            assert got.client_id == 1 and got.num_examples == 3
            verdict.set(True)

        reader = threading.Thread(target=answer)
        reader.start()
        retried = open_push(channel, b, task.task_id, update.header, chunks, done)
        done.set()
        assert pb.PushReply.FromString(retried.result(timeout=20)).accepted  # the kept chunks gave way
        reader.join(20)
        assert svc.budget.used == 0 and svc.kept_chunks() == {}
    finally:
        shut(svc, channel, srv, hold)


def one_node(tmp_path: Path) -> tuple[FedgeService, Signer]:
    """A one-client service without a gRPC front, and the signer of the node joined to it as client 0."""
    key, pub = new_keys(tmp_path, "n")
    svc = FedgeService(
        store=Store(tmp_path / "s.db"), verifier=Verifier(pub), run_id="r", config_toml="", num_clients=1, rounds=1
    )
    signer = Signer(load_private(key))
    join = pb.JoinRequest(partition=0).SerializeToString()
    svc.join(join, signer.metadata("Join", join))
    return svc, signer


def test_a_spec_mismatch_after_all_chunks_frees_the_budget(tmp_path: Path) -> None:
    svc, signer = one_node(tmp_path)
    task = svc.open_round(1, [0], [np.zeros(4, np.float32)], FitInstructions(round_num=1, train=TrainConfig()))
    out = wire.encode({"delta": [np.ones(5, np.float32)], "num_examples": 1}, chunk_size=8)
    head = wire.dump(pb.PushMessage(header=pb.PushHeader(task_id=task.task_id, round=1, update=out.header)))
    msgs = [head, *[wire.dump(pb.PushMessage(chunk=c)) for c in out.chunks()]]
    rep = pb.PushReply.FromString(svc.push(iter(msgs), signer.metadata("Push", head)))
    assert not rep.accepted and "shape" in rep.reason
    assert svc.budget.used == 0
    svc.store.close()


def one_push(channel: grpc.Channel, signer: Signer, header: Any, chunks: list[Any] = ()) -> Any:  # type: ignore[assignment]
    """One whole Push call: the header message, then ``chunks``; its PushReply."""
    head = wire.dump(pb.PushMessage(header=header))
    msgs = [head, *(wire.dump(pb.PushMessage(chunk=c)) for c in chunks)]
    stub = channel.stream_unary(PREFIX + "Push")
    return pb.PushReply.FromString(stub(iter(msgs), metadata=signer.metadata("Push", head), timeout=20))


@contextmanager
def a_cut_push(tmp_path: Path) -> Iterator[tuple[FedgeService, grpc.Channel, list[Signer], Any, Any]]:
    """A round of 1 MiB updates in four 256 KiB chunks whose node 0 cancelled its Push after 3 of them."""
    keys = [new_keys(tmp_path, name) for name in ("a", "b")]
    allow = tmp_path / "allow.txt"
    allow.write_text("".join(pub.read_text() for _, pub in keys))
    svc = FedgeService(
        store=Store(tmp_path / "s.db"), verifier=Verifier(allow), run_id="cut", config_toml="", num_clients=2, rounds=1
    )
    srv, port = start_grpc(svc, DeployConfig(port=0, insecure=True))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    signers = [Signer(load_private(key)) for key, _ in keys]
    hold = threading.Event()
    try:
        for i, s in enumerate(signers):
            call(channel, s, "Join", pb.JoinRequest(partition=i))
        task = svc.open_round(1, [0, 1], [np.zeros(MiB // 4, np.float32)], FitInstructions(1, TrainConfig()))
        update = wire.encode(
            {"delta": [np.ones(MiB // 4, np.float32)], "num_examples": 3, "metrics": {}, "extras": {}, "payload": {}},
            chunk_size=256 * 1024,
        )
        cut = open_push(channel, signers[0], task.task_id, update.header, list(update.chunks())[:3], hold)
        end = time.monotonic() + 20
        while svc.budget.used < 3 * 256 * 1024 and time.monotonic() < end:
            time.sleep(0.02)
        cut.cancel()
        while not svc.kept_chunks() and time.monotonic() < end:
            time.sleep(0.02)
        yield svc, channel, signers, task, update
    finally:
        shut(svc, channel, srv, hold)


def test_a_cancelled_push_keeps_its_verified_chunks_counted_until_its_round_closes(tmp_path: Path) -> None:
    with a_cut_push(tmp_path) as (svc, channel, signers, task, update):
        [(node, task_id)] = svc.kept_chunks()
        assert task_id == task.task_id and svc.kept_chunks()[node, task_id] == 3
        assert svc.budget.used == 3 * 256 * 1024  # the kept chunks are what the budget holds, no more
        head = pb.PushHeader(task_id=task.task_id, round=1, update=update.header, resume=True)
        assert one_push(channel, signers[0], head).held == 3
        svc.close_round(task)
        assert svc.kept_chunks() == {} and svc.budget.used == 0
        rep = one_push(channel, signers[0], head)
        assert not rep.accepted and rep.held == 0 and "no round is open" in rep.reason
        resumed = pb.PushHeader(task_id=task.task_id, round=1, update=update.header, start=3)
        rep = one_push(channel, signers[0], resumed, list(update.chunks(3)))
        assert not rep.accepted and "no round is open" in rep.reason


def test_a_node_that_joins_again_starts_its_push_over_and_frees_what_was_kept(tmp_path: Path) -> None:
    with a_cut_push(tmp_path) as (svc, channel, signers, task, update):
        assert svc.budget.used == 3 * 256 * 1024
        call(channel, signers[0], "Join", pb.JoinRequest(partition=0))
        assert svc.kept_chunks() == {} and svc.budget.used == 0
        ask = pb.PushHeader(task_id=task.task_id, round=1, update=update.header, resume=True)
        assert one_push(channel, signers[0], ask).held == 0


def test_a_forged_resume_is_refused_in_one_line_and_loses_nothing(tmp_path: Path) -> None:
    with a_cut_push(tmp_path) as (svc, channel, signers, task, update):
        kept = svc.kept_chunks()
        chunks = list(update.chunks())
        tree = {"delta": [np.full(MiB // 4, 9, np.float32)], "num_examples": 3, "metrics": {}, "extras": {}}
        other = wire.encode({**tree, "payload": {}}, chunk_size=256 * 1024)
        forged = [  # more chunks than were sent; another update's digest; another node
            (0, update.header, 4, [], "holds 3 chunks"),
            (0, other.header, 3, chunks[3:], "another update"),
            (1, update.header, 3, chunks[3:], "holds no chunks"),
        ]
        for who, header, start, rest, why in forged:
            head = pb.PushHeader(task_id=task.task_id, round=1, update=header, start=start)
            with pytest.raises(grpc.RpcError) as err:
                one_push(channel, signers[who], head, rest)
            reason = err.value.details() or ""
            assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE and why in reason and "\n" not in reason, reason
            assert svc.kept_chunks() == kept and svc.budget.used == 3 * 256 * 1024
        ask = pb.PushHeader(task_id=task.task_id, round=1, update=other.header, resume=True)
        assert one_push(channel, signers[0], ask).held == 0  # another update: nothing of it is held

        def answer() -> None:
            got, verdict = task.results.get(timeout=20)
            np.testing.assert_array_equal(got.delta[0], np.ones(MiB // 4, np.float32))
            verdict.set(True)

        reader = threading.Thread(target=answer)
        reader.start()
        head = pb.PushHeader(task_id=task.task_id, round=1, update=update.header, start=3)
        assert one_push(channel, signers[0], head, chunks[3:]).accepted
        reader.join(20)
        assert svc.kept_chunks() == {} and svc.budget.used == 0


def test_the_threaded_push_path_keeps_a_cut_push_and_resumes_it(tmp_path: Path) -> None:
    """``FedgeService.push`` (the front without an event loop) keeps and resumes as the gRPC gate does."""
    svc, signer = one_node(tmp_path)
    task = svc.open_round(1, [0], [np.zeros(64, np.float32)], FitInstructions(round_num=1, train=TrainConfig()))
    out = wire.encode({"delta": [np.ones(64, np.float32)], "num_examples": 1}, chunk_size=32)
    chunks = [wire.dump(pb.PushMessage(chunk=c)) for c in out.chunks()]

    def pushed(header: Any, body: list[bytes], cut_after: int = -1) -> Iterator[bytes]:
        yield wire.dump(pb.PushMessage(header=header))
        for i, c in enumerate(body):
            if i == cut_after:
                raise ConnectionResetError("link cut")
            yield c

    def push(header: Any, body: list[bytes], cut_after: int = -1) -> Any:
        head = wire.dump(pb.PushMessage(header=header))
        return pb.PushReply.FromString(svc.push(pushed(header, body, cut_after), signer.metadata("Push", head)))

    with pytest.raises(ConnectionResetError):
        push(pb.PushHeader(task_id=task.task_id, round=1, update=out.header), chunks, cut_after=5)
    assert list(svc.kept_chunks().values()) == [5] and svc.budget.used == 5 * 32

    def answer() -> None:
        got, verdict = task.results.get(timeout=20)
        np.testing.assert_array_equal(got.delta[0], np.ones(64, np.float32))
        verdict.set(True)

    reader = threading.Thread(target=answer)
    reader.start()
    assert push(pb.PushHeader(task_id=task.task_id, round=1, update=out.header, start=5), chunks[5:]).accepted
    reader.join(20)
    assert svc.kept_chunks() == {} and svc.budget.used == 0
    svc.store.close()
