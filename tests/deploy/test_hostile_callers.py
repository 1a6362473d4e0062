"""Callers that try to stop or flood the server: refused before their body is read, cut when they stall.

A real gRPC server on loopback (in this process, or ``fedge serve`` as a subprocess), real
signatures, real nodes. Issue 14, failures 1 (unauthenticated streams that held every
worker thread) and 6 (revocation probed before the signature, refusal logs unthrottled,
plaintext without asking).
"""

from __future__ import annotations

import base64
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedge.clients.base import TrainResult
from fedge.core.params import Params
from fedge.core.types import ClientContext, EvalResult, TrainConfig
from fedge.deploy import wire
from fedge.deploy.auth import H_SIG, Signer, Verifier, load_private, new_keys
from fedge.deploy.config import DeployConfig
from fedge.deploy.node import Backoff, Node
from fedge.deploy.proto import pb
from fedge.deploy.server import start_grpc
from fedge.deploy.service import FedgeService
from fedge.deploy.store import Store
from fedge.deploy.transport import GrpcTransport
from fedge.engine import run
from fedge.simulation.sampling import Sampling
from fedge.strategies.fedavg import FedAvg

from .conftest import FEDGE, free_port

pytestmark = pytest.mark.integration

TOML = 'seed = 0\nrounds = 1\n[model]\nname = "logreg"\nframework = "numpy"\n'
PUSH, POLL, JOIN, STATUS = (f"/fedge.deploy.Fedge/{m}" for m in ("Push", "Poll", "Join", "Status"))


class Adder:
    """A node's client that adds one to every parameter."""

    def __init__(self, cid: int) -> None:
        self.client_id = cid

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        return TrainResult([p + np.float32(1) for p in params], steps=1, loss=0.5, num_examples=10)

    def evaluate(self, params: Params) -> EvalResult:
        return EvalResult(self.client_id, 1, 0.0, 1.0)


@contextmanager
def served(
    tmp_path: Path, allow: Path, cfg: DeployConfig, *, revoked: Path | None = None
) -> Iterator[tuple[GrpcTransport, grpc.Channel, str]]:
    """A two-client server over loopback, its transport, a plaintext channel to it and its address."""
    svc = FedgeService(
        store=Store(tmp_path / "s.db"),
        verifier=Verifier(allow, revoked),
        run_id="hostile",
        config_toml=TOML,
        num_clients=2,
        rounds=1,
        heartbeat_s=0.2,
        node_timeout_s=3.0,
    )
    transport = GrpcTransport(svc, wait_s=20, round_deadline_s=20)
    srv, port = start_grpc(svc, cfg)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield transport, channel, f"127.0.0.1:{port}"
    finally:
        channel.close()
        transport.close()
        srv.stop(0.5).wait()
        svc.refusals.close()
        svc.store.close()


def silent(until: threading.Event) -> Iterator[bytes]:
    """A request stream that sends nothing until ``until`` is set."""
    until.wait(60)
    yield from ()


def header(task_id: str = "other:run:7") -> bytes:
    return wire.dump(pb.PushMessage(header=pb.PushHeader(task_id=task_id, round=7)))


def join(channel: grpc.Channel, signer: Signer) -> None:
    body = pb.JoinRequest(partition=-1).SerializeToString()
    channel.unary_unary(JOIN)(body, metadata=signer.metadata("Join", body), timeout=10)


def push_reply(channel: grpc.Channel, signer: Signer) -> Any:
    """An honest push for a task that is not open: answered, not refused, when the node's Push slot is free."""
    head = header()
    raw = channel.stream_unary(PUSH)(iter([head]), metadata=signer.metadata("Push", head), timeout=10)
    return wire.parse(pb.PushReply, raw)


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := pred():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_unsigned_and_stalled_pushes_leave_status_and_an_honest_round_running(tmp_path: Path, make_keys: Any) -> None:
    keys, allow = make_keys(4)
    cfg = DeployConfig(port=0, insecure=True, workers=8, stall_s=2.0)
    release = threading.Event()
    with served(tmp_path, allow, cfg) as (transport, channel, target):
        node = Node(
            target,
            Signer(load_private(keys[0])),
            partition=0,
            client_factory=lambda exp, cid: Adder(cid),
            backoff=Backoff(give_up_s=20),
            insecure=True,
        )
        push = channel.stream_unary(PUSH)
        unsigned = [push.future(silent(release), timeout=60) for _ in range(40)]
        stalled = []
        for k in keys[1:]:  # allowed nodes that authenticate, then never send their header
            stalled.append(push.future(silent(release), metadata=Signer(load_private(k)).metadata("Push", header())))
        try:
            raw = channel.unary_unary(STATUS)(b"", timeout=5)
            assert '"run_id": "hostile"' in wire.parse(pb.StatusReply, raw).json
            t = threading.Thread(target=node.run, daemon=True)
            t.start()
            result = run(
                strategy=FedAvg(),
                transport=transport,
                initial_params=[np.zeros(3, np.float32)],
                rounds=1,
                sampling=Sampling(count=None, fraction=1.0),
            )
            assert result.history.rounds[0].participants == 1
            np.testing.assert_array_equal(result.state.params[0], np.ones(3, np.float32))
            codes = {f.exception(timeout=10).code() for f in unsigned}  # type: ignore[union-attr]
            assert codes <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert grpc.StatusCode.UNAUTHENTICATED in codes
            assert {f.exception(timeout=15).code() for f in stalled} == {grpc.StatusCode.CANCELLED}  # type: ignore[union-attr]
        finally:
            release.set()
            for f in unsigned + stalled:
                f.cancel()
            node.stop()


def test_a_revoked_node_with_a_bad_signature_hears_bad_signature_not_revoked(tmp_path: Path, make_keys: Any) -> None:
    _, allow = make_keys(1)
    revoked_key, revoked_pub = new_keys(tmp_path / "keys", "gone")
    revoked = tmp_path / "revoked.txt"
    revoked.write_text(revoked_pub.read_text())
    allow.write_text(allow.read_text() + revoked_pub.read_text())
    body = pb.PollRequest(session="x:y").SerializeToString()
    signer = Signer(load_private(revoked_key))
    forged = [
        (k, base64.b64encode(b"\x01" * 64).decode() if k == H_SIG else v) for k, v in signer.metadata("Poll", body)
    ]
    with served(tmp_path, allow, DeployConfig(port=0, insecure=True), revoked=revoked) as (_tr, channel, _):
        poll = channel.unary_unary(POLL)
        with pytest.raises(grpc.RpcError) as bad:
            poll(body, metadata=forged, timeout=10)
        with pytest.raises(grpc.RpcError) as denied:
            poll(body, metadata=signer.metadata("Poll", body), timeout=10)
    assert bad.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "bad signature" in (bad.value.details() or "") and "revoked" not in (bad.value.details() or "")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED and "revoked" in (denied.value.details() or "")


def test_a_stalled_authenticated_push_is_cut_after_stall_s_and_frees_the_nodes_slot(
    tmp_path: Path, make_keys: Any, caplog: pytest.LogCaptureFixture
) -> None:
    keys, allow = make_keys(1)
    signer = Signer(load_private(keys[0]))
    release = threading.Event()
    with (
        caplog.at_level(logging.WARNING, logger="fedge.deploy"),
        served(tmp_path, allow, DeployConfig(port=0, insecure=True, stall_s=1.0)) as (_tr, channel, _),
    ):
        join(channel, signer)
        stalled = channel.stream_unary(PUSH).future(silent(release), metadata=signer.metadata("Push", header()))
        try:
            error = stalled.exception(timeout=15)
        finally:
            release.set()
        assert error is not None and error.code() == grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
        reply = push_reply(channel, signer)
    assert not reply.accepted and "no round is open" in reply.reason
    cuts = [r.getMessage() for r in caplog.records if "event=call_cut" in r.getMessage()]
    assert cuts and "stall_s=1" in cuts[0] and f"node={signer.node_id}" in cuts[0]


def test_a_node_gets_one_push_in_flight_and_others_are_not_held_up(tmp_path: Path, make_keys: Any) -> None:
    keys, allow = make_keys(2)
    a, b = (Signer(load_private(k)) for k in keys)
    release = threading.Event()
    with served(tmp_path, allow, DeployConfig(port=0, insecure=True, stall_s=60.0)) as (_tr, channel, _):
        join(channel, a)
        join(channel, b)
        first = channel.stream_unary(PUSH).future(silent(release), metadata=a.metadata("Push", header()))

        def second_refused() -> bool:
            try:
                push_reply(channel, a)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                assert "Push call(s) in flight" in (exc.details() or "")
                return True
            return False

        try:
            wait_until(second_refused, 10, "a second Push of the same node to be refused")
            assert "no round is open" in push_reply(channel, b).reason
        finally:
            first.cancel()
            release.set()

        def answered() -> bool:
            try:
                return "no round is open" in push_reply(channel, a).reason
            except grpc.RpcError:
                return False

        wait_until(answered, 10, "the node's Push slot to be freed once its call ended")


def test_a_flood_of_refused_requests_logs_a_few_lines_and_a_count(
    tmp_path: Path, make_keys: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, allow = make_keys(1)
    cfg = DeployConfig(port=0, insecure=True, refusal_log_s=2.0)
    body = pb.PollRequest().SerializeToString()
    with (
        caplog.at_level(logging.WARNING, logger="fedge.deploy"),
        served(tmp_path, allow, cfg) as (_tr, channel, _),
    ):
        poll = channel.unary_unary(POLL)
        calls = [poll.future(body, timeout=10) for _ in range(30)]
        assert {c.exception(timeout=10).code() for c in calls} == {grpc.StatusCode.UNAUTHENTICATED}  # type: ignore[union-attr]
        summary = wait_until(
            # This server's summary: another test's server may still flush its own window here.
            lambda: [
                m
                for r in caplog.records
                if "event=refused_summary" in (m := r.getMessage()) and '"refused:Poll:UNAUTHENTICATED"' in m
            ],
            15,
            "the refusal summary line",
        )
    full = [r for r in caplog.records if "event=refused method=Poll code=UNAUTHENTICATED" in r.getMessage()]
    assert 1 <= len(full) <= 5
    assert len(summary) == 1
    assert "count=30 " in summary[0] and '"refused:Poll:UNAUTHENTICATED": 30' in summary[0]


def fedge(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDGE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_plaintext_needs_insecure_on_both_ends_and_then_warns(
    tmp_path: Path, make_keys: Any, write_experiment: Any
) -> None:
    keys, allow = make_keys(1)
    port = free_port()
    exp = write_experiment(allow=allow, clients=1, rounds=1, port=port)
    exp.write_text(exp.read_text().replace("insecure = true\n", ""))
    refused = fedge("serve", str(exp), "-q", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: no TLS: pass --tls-cert/--tls-key (make them with `fedge certs new`), "
        "or --insecure (deploy.insecure = true) to serve plaintext on a trusted network"
    ]
    node_args = ["join", "--server", f"127.0.0.1:{port}", "--key", str(keys[0]), "--partition", "0", "--give-up", "30"]
    alone = fedge(*node_args, cwd=tmp_path)
    assert alone.returncode == 2
    assert alone.stderr.strip().splitlines() == [
        "error: no CA given: pass --ca FILE (the server's CA) for TLS, or --insecure for plaintext on a trusted network"
    ]

    log = tmp_path / "server.log"
    with open(log, "wb") as f:
        server = subprocess.Popen([*FEDGE, "serve", str(exp), "--insecure"], stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "listening on" in log.read_text() or server.poll() is not None, 60, "the server")
        plain = fedge("status", "--server", f"127.0.0.1:{port}", cwd=tmp_path)
        assert plain.returncode == 2
        assert "the server speaks plaintext: pass --insecure" in plain.stderr
        shown = fedge("status", "--server", f"127.0.0.1:{port}", "--insecure", cwd=tmp_path)
        assert shown.returncode == 0 and "waiting for nodes" in shown.stdout, shown.stderr
        node = fedge(*node_args, "--insecure", cwd=tmp_path, timeout=120)
        assert server.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
    assert node.returncode == 0, node.stderr[-2000:]
    assert "fedge join: WARNING: --insecure: no TLS, everything travels in plaintext" in node.stderr
    assert "fedge serve: WARNING: no TLS (--insecure): models and updates travel in plaintext" in log.read_text()
