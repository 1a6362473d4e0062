"""The gRPC transport in one process: real gRPC on loopback, nodes in threads.

A 50 MB model makes a round trip through the chunked path; SCAFFOLD over gRPC ends
where the simulation ends; bad updates, silent nodes and missing nodes are handled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedge.clients.base import TrainResult
from fedge.config.schema import Experiment
from fedge.core.errors import TransportError
from fedge.core.params import Params
from fedge.core.types import ClientContext, EvalResult, TrainConfig
from fedge.deploy import wire
from fedge.deploy.auth import Signer, Verifier, load_private
from fedge.deploy.config import DeployConfig
from fedge.deploy.node import Backoff, Node
from fedge.deploy.proto import pb
from fedge.deploy.server import start_grpc
from fedge.deploy.service import FedgeService
from fedge.deploy.store import Store
from fedge.deploy.transport import GrpcTransport
from fedge.engine import RunResult, run
from fedge.simulation.sampling import Sampling
from fedge.strategies.fedavg import FedAvg

TOML = 'seed = 0\nrounds = 1\n[model]\nname = "logreg"\nframework = "numpy"\n'


class AddClient:
    """Adds ``step`` to every parameter (or returns something broken)."""

    def __init__(self, cid: int, step: float = 1.0, broken: str = "") -> None:
        self.client_id, self.step, self.broken = cid, step, broken

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        out = [p + np.float32(self.step) for p in params]
        if self.broken == "nan":
            out[0][0] = np.nan
        if self.broken == "raise":
            raise RuntimeError("sensor offline")
        return TrainResult(out, steps=1, loss=0.5, num_examples=10)

    def loss(self, params: Params) -> float:
        return 0.0

    def evaluate(self, params: Params) -> EvalResult:
        return EvalResult(self.client_id, 1, 0.0, 1.0)


@contextmanager
def server(
    tmp_path: Path,
    allow: Path,
    *,
    num_clients: int,
    min_nodes: int | None = None,
    deadline: float = 30.0,
    wait: float = 30.0,
    cfg: DeployConfig | None = None,
) -> Iterator[tuple[FedgeService, GrpcTransport, int]]:
    cfg = cfg or DeployConfig(port=0, insecure=True)
    svc = FedgeService(
        store=Store(tmp_path / "s.db"),
        verifier=Verifier(allow),
        run_id="test",
        config_toml=TOML,
        num_clients=num_clients,
        rounds=1,
        min_nodes=min_nodes or num_clients,
        heartbeat_s=0.2,
        node_timeout_s=2.0,
    )
    transport = GrpcTransport(svc, wait_s=wait, round_deadline_s=deadline)
    srv, port = start_grpc(svc, cfg)
    try:
        yield svc, transport, port
    finally:
        transport.close()
        stop_nodes()
        srv.stop(0.5).wait()
        svc.store.close()


NODES: list[tuple[Node, threading.Thread]] = []


def stop_nodes() -> None:
    """Nodes hear STOP at their next poll; stop() covers any that cannot reach the server."""
    for node, t in NODES:
        t.join(3)
        node.stop()
        t.join(5)
    NODES.clear()


def start_node(
    port: int, key: Path, factory: Callable[[Experiment, int], Any] | None, partition: int, **kw: Any
) -> tuple[Node, threading.Thread]:
    node = Node(
        f"127.0.0.1:{port}",
        Signer(load_private(key)),
        partition=partition,
        client_factory=factory,
        backoff=Backoff(give_up_s=10),
        insecure="root_ca" not in kw,
        **kw,
    )
    t = threading.Thread(target=node.run, daemon=True)
    t.start()
    NODES.append((node, t))
    return node, t


def serve_in_thread(exp: Experiment) -> tuple[threading.Thread, int, dict[str, Any]]:
    """``serve(exp)`` in a thread: the thread, the port it listens on, and the dict its ``Served`` lands in."""
    from fedge.deploy.server import serve

    ports: list[int] = []
    ready = threading.Event()
    out: dict[str, Any] = {}

    def main() -> None:
        out["served"] = serve(exp, on_ready=lambda p: (ports.append(p), ready.set()), linger_s=0.5)

    t = threading.Thread(target=main)
    t.start()
    assert ready.wait(30), "the server did not start"
    return t, ports[0], out


def federate(transport: GrpcTransport, initial: Params, rounds: int = 1) -> RunResult:
    return run(
        strategy=FedAvg(),
        transport=transport,
        initial_params=initial,
        rounds=rounds,
        sampling=Sampling(count=None, fraction=1.0),
    )


@pytest.mark.integration
def test_a_50_mb_model_round_trips_in_chunks(tmp_path: Path, make_keys: Any) -> None:
    keys, allow = make_keys(1)
    big = [(np.arange(12_500_000) % 1000).astype(np.float32).reshape(2500, 5000), np.ones(7, np.float32)]
    cfg = DeployConfig(port=0, chunk_kib=4096, insecure=True)
    with server(tmp_path, allow, num_clients=1, cfg=cfg) as (_svc, tr, port):
        start_node(port, keys[0], lambda exp, cid: AddClient(cid), 0)
        result = federate(tr, big)
    rec = result.history.rounds[0]
    assert rec.participants == 1 and rec.failed == 0
    assert rec.uplink_bytes > 50_000_000
    assert np.array_equal(result.state.params[0], big[0] + 1) and np.array_equal(result.state.params[1], big[1] + 1)


@pytest.mark.integration
def test_bad_updates_are_refused_with_the_reason_and_the_round_goes_on(tmp_path: Path, make_keys: Any) -> None:
    keys, allow = make_keys(3)
    kinds = ["", "nan", "raise"]
    with server(tmp_path, allow, num_clients=3) as (_svc, tr, port):
        for i in range(3):
            start_node(port, keys[i], lambda exp, cid: AddClient(cid, broken=kinds[cid]), i)
        result = federate(tr, [np.zeros((2, 2), np.float32)])
    rec = result.history.rounds[0]
    assert rec.participants == 1
    reasons = {cid: reason for reason, ids in rec.dropped.items() for cid in ids}
    assert "NaN" in reasons[1]
    assert "node reports: RuntimeError: sensor offline" in reasons[2]
    assert np.array_equal(result.state.params[0], np.ones((2, 2), np.float32))


@pytest.mark.integration
def test_a_silent_node_fails_at_the_round_deadline(tmp_path: Path, make_keys: Any) -> None:
    keys, allow = make_keys(2)
    with server(tmp_path, allow, num_clients=2, deadline=1.0) as (_svc, tr, port):
        start_node(port, keys[0], lambda exp, cid: AddClient(cid), 0)
        silent = Node(
            f"127.0.0.1:{port}",
            Signer(load_private(keys[1])),
            partition=1,
            client_factory=lambda exp, cid: AddClient(cid),
            insecure=True,
        )
        silent.join()
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(0.2):
                silent.poll(busy=True)

        threading.Thread(target=beat, daemon=True).start()
        result = federate(tr, [np.zeros(4, np.float32)])
        stop.set()
    rec = result.history.rounds[0]
    assert rec.participants == 1
    assert any("round deadline" in reason and ids == [1] for reason, ids in rec.dropped.items())


def test_too_few_nodes_is_a_bounded_wait_with_a_clear_message(tmp_path: Path, make_keys: Any) -> None:
    _, allow = make_keys(1)
    with (
        server(tmp_path, allow, num_clients=3, min_nodes=2, wait=0.3) as (_svc, tr, _port),
        pytest.raises(TransportError, match=r"0 nodes connected, 2 needed \(missing client ids 0, 1, 2\)"),
    ):
        federate(tr, [np.zeros(4, np.float32)])


@pytest.mark.integration
def test_scaffold_over_grpc_ends_where_the_simulation_ends(tmp_path: Path, make_keys: Any) -> None:
    from fedge.config import from_dict
    from fedge.federation import build, execute

    keys, allow = make_keys(3)
    raw = {
        "seed": 5,
        "rounds": 3,
        "data": {"num_clients": 3},
        "model": {"name": "logreg", "framework": "numpy"},
        "strategy": {"name": "scaffold"},
        "training": {"clients_per_round": 3, "local_epochs": 1},
        "evaluation": {"centralized": False},
    }
    sim = execute(build(from_dict(raw)))
    exp = from_dict(
        {
            **raw,
            "deploy": {
                "port": 0,
                "state": str(tmp_path / "run.db"),
                "min_nodes": 3,
                "heartbeat_s": 0.2,
                "allow_list": str(allow),
                "insecure": True,
            },
        }
    )
    t, port, out = serve_in_thread(exp)
    for i in range(3):
        start_node(port, keys[i], None, i, state_dir=tmp_path / f"n{i}")
    t.join(60)
    stop_nodes()
    served = out["served"]
    assert [r.participants for r in served.history] == [3, 3, 3]
    for a, b in zip(served.result.state.params, sim.state.params, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert all((tmp_path / f"n{i}" / f"fedge-client-{i}.state").is_file() for i in range(3))


@pytest.mark.integration
def test_mutual_tls_admits_a_node_with_a_certificate_and_no_other(
    tmp_path: Path, make_keys: Any, certs: dict[str, Path]
) -> None:
    keys, allow = make_keys(2)
    cfg = DeployConfig(
        port=0, tls_cert=str(certs["server"]), tls_key=str(certs["server_key"]), client_ca=str(certs["ca"])
    )
    ca = certs["ca"].read_bytes()
    with server(tmp_path, allow, num_clients=2, min_nodes=1, cfg=cfg) as (_svc, tr, port):
        without = Node(
            f"127.0.0.1:{port}", Signer(load_private(keys[1])), partition=1, root_ca=ca, backoff=Backoff(give_up_s=0.5)
        )
        with pytest.raises(TransportError, match="unreachable"):
            without.join()
        _, _t = start_node(
            port,
            keys[0],
            lambda exp, cid: AddClient(cid),
            0,
            root_ca=ca,
            cert_chain=(certs["node_key"].read_bytes(), certs["node"].read_bytes()),
        )
        result = federate(tr, [np.zeros(4, np.float32)])
    assert result.history.rounds[0].participants == 1


def test_signed_but_wrong_requests_are_refused_by_the_handlers(tmp_path: Path, make_keys: Any) -> None:
    keys, allow = make_keys(1)
    signer = Signer(load_private(keys[0]))
    with server(tmp_path, allow, num_clients=1) as (_svc, _tr, port):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        push = channel.stream_unary("/fedge.deploy.Fedge/Push")
        head = wire.dump(pb.PushMessage(header=pb.PushHeader(task_id="other:run:7", round=7)))
        join = pb.JoinRequest(partition=0).SerializeToString()
        channel.unary_unary("/fedge.deploy.Fedge/Join")(join, metadata=signer.metadata("Join", join))
        reply = wire.parse(pb.PushReply, push(iter([head]), metadata=signer.metadata("Push", head)))
        assert not reply.accepted and "no round is open" in reply.reason
        with pytest.raises(grpc.RpcError) as e:
            channel.unary_unary("/fedge.deploy.Fedge/Join")(b"\xff\x01", metadata=signer.metadata("Join", b"\xff\x01"))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed" in (e.value.details() or "")
        status = wire.parse(pb.StatusReply, channel.unary_unary("/fedge.deploy.Fedge/Status")(b""))
        assert '"client_id": 0' in status.json
        channel.close()


@pytest.mark.integration
def test_a_graceful_stop_keeps_nodes_waiting_and_resume_finishes_the_run(tmp_path: Path, make_keys: Any) -> None:
    from fedge.config import from_dict
    from fedge.deploy.server import serve
    from fedge.federation import build, execute

    from .conftest import free_port

    keys, allow = make_keys(2)
    raw = {
        "seed": 2,
        "rounds": 4,
        "data": {"dataset": "synthetic", "num_clients": 2},
        "model": {"name": "logreg", "framework": "numpy"},
        "strategy": {"name": "fedavgm"},
        "training": {"clients_per_round": 2, "local_epochs": 1},
        "evaluation": {"centralized": False},
    }
    reference = execute(build(from_dict(raw)))
    port = free_port()
    deploy = {
        "port": port,
        "state": str(tmp_path / "run.db"),
        "min_nodes": 2,
        "heartbeat_s": 0.2,
        "allow_list": str(allow),
        "insecure": True,
    }

    class StopAfterFirst:
        def __init__(self) -> None:
            self.transport: GrpcTransport | None = None

        def hook(self, t: GrpcTransport) -> None:
            self.transport = t
            original = t.fit

            def fit(*args: Any, **kw: Any) -> Any:
                t.stopping.set()
                return original(*args, **kw)

            t.fit = fit  # type: ignore[method-assign]

    ready = threading.Event()
    stopper = StopAfterFirst()
    out: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: out.update(
            first=serve(
                from_dict({**raw, "deploy": deploy}), on_ready=lambda p: ready.set(), transport_hook=stopper.hook
            )
        )
    )
    t.start()
    assert ready.wait(30)
    for i in range(2):
        start_node(port, keys[i], None, i, state_dir=tmp_path / f"n{i}")
    t.join(60)
    first = out["first"]
    assert first.result.stopped_early == "stopped by signal" and len(first.history) == 1
    assert all(th.is_alive() for _, th in NODES), "nodes keep retrying after a graceful stop"
    second = serve(from_dict({**raw, "deploy": deploy}), resume=True, linger_s=0.5)
    stop_nodes()
    assert [r.round for r in second.history] == [1, 2, 3, 4]
    for a, b in zip(second.result.state.params, reference.state.params, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
