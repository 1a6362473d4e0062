"""A server that carries a fleet: thousands of real nodes from the load generator, churn, cut
transfers (Fetch and Push) that resume, work pushed on the Subscribe stream, federated evaluation over gRPC.

Every node is a real gRPC client on loopback with its own key and signatures
(:mod:`fedge.deploy.loadgen`); the server is the event-driven one ``fedge serve`` runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.deploy.auth import Verifier
from fedge.deploy.config import DeployConfig
from fedge.deploy.loadgen import Stats, run_fleet, write_allow_list
from fedge.deploy.server import start_grpc
from fedge.deploy.service import FedgeService, Refused
from fedge.deploy.store import Store
from fedge.deploy.transport import GrpcTransport
from fedge.engine import RunResult, run
from fedge.simulation.sampling import Sampling
from fedge.strategies.fedavg import FedAvg

from .conftest import bare_deploy
from .test_transport import serve_in_thread, start_node, stop_nodes

pytestmark = pytest.mark.integration

TOML = 'seed = 0\nrounds = 1\n[model]\nname = "logreg"\nframework = "numpy"\n'


@contextmanager
def fleet_server(
    tmp_path: Path, nodes: int, *, rounds: int, deadline_s: float = 120.0, chunk_kib: int = 2048
) -> Iterator[tuple[FedgeService, GrpcTransport, str]]:
    allow = write_allow_list(tmp_path / "allow.txt", nodes)
    svc = FedgeService(
        store=Store(tmp_path / "s.db"),
        verifier=Verifier(allow),
        run_id="fleet",
        config_toml=TOML,
        num_clients=nodes,
        rounds=rounds,
        min_nodes=nodes,
        heartbeat_s=5.0,
        node_timeout_s=30.0,
        chunk_size=chunk_kib * 1024,
    )
    transport = GrpcTransport(svc, wait_s=300, round_deadline_s=deadline_s, round_min_nodes=1)
    srv, port = start_grpc(svc, DeployConfig(port=0, insecure=True, node_timeout_s=30.0))
    try:
        yield svc, transport, f"127.0.0.1:{port}"
    finally:
        transport.close()
        srv.stop(1.0).wait()
        svc.refusals.close()
        svc.store.close()


def federate_with_fleet(
    transport: GrpcTransport, target: str, nodes: int, rounds: int, *, churn: float = 0.0, params: int = 1000
) -> tuple[RunResult, Stats]:
    """Run ``rounds`` of FedAvg over ``nodes`` load-generator nodes; the run and the fleet's own counts."""
    fleet: dict[str, Stats] = {}
    t = threading.Thread(
        target=lambda: fleet.update(stats=run_fleet(target, nodes, processes=2, churn=churn, timeout_s=240))
    )
    t.start()
    try:
        result = run(
            strategy=FedAvg(),
            transport=transport,
            initial_params=[np.zeros(params, np.float32)],
            rounds=rounds,
            sampling=Sampling(count=None, fraction=1.0),
        )
    finally:
        transport.close()
        t.join(120)
    return result, fleet["stats"]


def test_two_thousand_nodes_complete_three_rounds_with_no_failure(tmp_path: Path) -> None:
    nodes, rounds = 2000, 3
    with fleet_server(tmp_path, nodes, rounds=rounds) as (_svc, transport, target):
        result, stats = federate_with_fleet(transport, target, nodes, rounds)
    recs = result.history.rounds
    assert [r.participants for r in recs] == [nodes] * rounds, stats
    assert [r.failed for r in recs] == [0] * rounds
    assert stats.accepted == nodes * rounds and stats.refused == 0 and stats.errors == 0
    assert stats.stopped == nodes  # every node heard STOP on its stream
    # each node replays model + 1e-3: FedAvg moves the model by exactly that each round
    np.testing.assert_allclose(result.state.params[0], np.full(1000, rounds * 1e-3, np.float32), rtol=1e-5)


def test_churn_closes_every_round_and_counts_exactly_the_accepted_pushes(tmp_path: Path) -> None:
    nodes, rounds = 1000, 10
    with fleet_server(tmp_path, nodes, rounds=rounds, deadline_s=20.0) as (_svc, transport, target):
        result, stats = federate_with_fleet(transport, target, nodes, rounds, churn=0.1)
    recs = result.history.rounds
    assert len(recs) == rounds
    assert stats.dropped > rounds * nodes * 0.05  # the fleet really churned, about 10 % a round
    assert sum(r.participants for r in recs) == stats.accepted  # every accepted push counted, none twice
    assert all(r.participants + r.failed == nodes for r in recs)
    assert all(r.participants <= nodes for r in recs)
    assert result.history.rounds[-1].round == rounds


class Adder:
    """A node's client that adds ``step`` to every parameter."""

    def __init__(self, cid: int, step: float) -> None:
        self.client_id, self.step = cid, np.float32(step)

    def train(self, params: Any, cfg: Any, ctx: Any) -> Any:
        from fedge.clients.base import TrainResult

        return TrainResult([p + self.step for p in params], steps=1, loss=0.0, num_examples=1)


def federate_nodes(
    svc: FedgeService, keys: list[Path], initial: list[np.ndarray], rounds: int, step: float, **cfg: Any
) -> RunResult:
    """FedAvg over one real Node per key (client i = key i, each adding ``step``), served by ``svc``."""
    transport = GrpcTransport(svc, wait_s=30, round_deadline_s=100)
    srv, port = start_grpc(svc, DeployConfig(port=0, insecure=True, **cfg))
    try:
        for i, key in enumerate(keys):
            start_node(port, key, lambda exp, cid: Adder(cid, step), i)
        return run(
            strategy=FedAvg(),
            transport=transport,
            initial_params=initial,
            rounds=rounds,
            sampling=Sampling(count=None, fraction=1.0),
        )
    finally:
        transport.close()
        stop_nodes()
        srv.stop(0.5).wait()
        svc.refusals.close()
        svc.store.close()


def service(tmp_path: Path, allow: Path, nodes: int, rounds: int, **kw: Any) -> FedgeService:
    return FedgeService(
        store=Store(tmp_path / "s.db"),
        verifier=Verifier(allow),
        run_id="nodes",
        config_toml=TOML,
        num_clients=nodes,
        rounds=rounds,
        min_nodes=nodes,
        **kw,
    )


def test_a_fetch_cut_in_the_middle_resumes_from_the_last_verified_chunk(tmp_path: Path, make_keys: Any) -> None:
    """A 3 MiB model in 256 KiB chunks; the server cuts the first Fetch after 5 chunks."""
    keys, allow = make_keys(1)
    svc = service(tmp_path, allow, 1, 1, heartbeat_s=0.2, node_timeout_s=5.0, chunk_size=256 * 1024)
    starts: list[int] = []
    original = svc.fetch

    def cutting_fetch(raw: bytes, md: Any) -> Iterator[bytes]:
        from fedge.deploy import wire
        from fedge.deploy.proto import pb

        starts.append(wire.parse(pb.FetchRequest, raw).start)
        for i, chunk in enumerate(original(raw, md)):
            if len(starts) == 1 and i == 5:
                raise Refused("UNAVAILABLE", "link cut")
            yield chunk

    svc.fetch = cutting_fetch  # type: ignore[method-assign]
    initial = [np.arange(3 * 2**18, dtype=np.float32)]  # 3 MiB: 12 chunks
    result = federate_nodes(svc, keys, initial, 1, 0.5)
    assert starts == [0, 5]  # the second Fetch asked for the first chunk it did not have
    assert result.history.rounds[0].participants == 1
    np.testing.assert_array_equal(result.state.params[0], initial[0] + np.float32(0.5))


class CutPushes:
    """Wraps ``svc.push_open``: Push number ``n`` (1-based, asks included) is cut once ``cuts[n]`` chunks in
    all have been received; records each Push's (resume, start), each chunk received and the budget at each ask."""

    def __init__(self, svc: FedgeService, cuts: dict[int, int], on_ask: Any = None) -> None:
        self.svc, self.cuts, self.on_ask = svc, cuts, on_ask
        self.heads: list[tuple[bool, int]] = []
        self.received: list[int] = []
        self.held_at_ask: list[int] = []
        self.original = svc.push_open
        svc.push_open = self.open  # type: ignore[method-assign]

    def open(self, first: bytes, md: Any) -> Any:
        from fedge.deploy import wire
        from fedge.deploy.proto import pb

        head = wire.parse(pb.PushMessage, first).header
        self.heads.append((head.resume, head.start))
        if head.resume:
            self.held_at_ask.append(self.svc.budget.used)
        opened = self.original(first, md)
        if head.resume and self.on_ask is not None:
            self.on_ask()
        if isinstance(opened, bytes):
            return opened
        add, cut = opened.add, self.cuts.get(len(self.heads))

        def add_until_cut(raw: bytes, held: Any) -> None:
            if cut == len(self.received):
                raise Refused("UNAVAILABLE", "link cut")
            add(raw, held)
            self.received.append(wire.parse(pb.PushMessage, raw).chunk.index)

        opened.add = add_until_cut  # type: ignore[method-assign]
        return opened


def test_a_push_cut_in_the_middle_resumes_from_the_last_verified_chunk(tmp_path: Path, make_keys: Any) -> None:
    """A 3 MiB update in 256 KiB chunks; the server's link cuts the first Push after 5 chunks, the resumed one
    after 4 more."""
    keys, allow = make_keys(1)
    chunk = 256 * 1024
    svc = service(tmp_path, allow, 1, 1, heartbeat_s=0.2, node_timeout_s=5.0, chunk_size=chunk)
    pushes = CutPushes(svc, {1: 5, 3: 9})
    initial = [np.arange(3 * 2**18, dtype=np.float32)]  # 3 MiB: 12 chunks each way
    result = federate_nodes(svc, keys, initial, 1, 0.5)
    # pushed, asked where to resume, resumed at chunk 5, cut again, asked, resumed at chunk 9
    assert pushes.heads == [(False, 0), (True, 0), (False, 5), (True, 0), (False, 9)]
    assert pushes.received == list(range(12))  # 12 chunks in all: none sent twice
    assert pushes.held_at_ask == [5 * chunk, 9 * chunk]  # the kept chunks stayed counted in the byte budget
    assert result.history.rounds[0].participants == 1
    np.testing.assert_array_equal(result.state.params[0], initial[0] + np.float32(0.5))
    assert svc.budget.used == 0 and svc.kept_chunks() == {}


def test_a_node_whose_kept_chunks_were_reclaimed_pushes_its_whole_update(tmp_path: Path, make_keys: Any) -> None:
    """The server drops what it held right after telling the node: the resume is refused and the node starts over."""
    keys, allow = make_keys(1)
    svc = service(tmp_path, allow, 1, 1, heartbeat_s=0.2, node_timeout_s=5.0, chunk_size=256 * 1024)
    pushes = CutPushes(svc, {1: 5}, on_ask=lambda: svc.drop_kept(lambda k: True))
    initial = [np.arange(3 * 2**18, dtype=np.float32)]
    result = federate_nodes(svc, keys, initial, 1, 0.5)
    assert pushes.heads == [(False, 0), (True, 0), (False, 5), (False, 0)]
    assert pushes.received == [*range(5), *range(12)]
    assert result.history.rounds[0].participants == 1
    np.testing.assert_array_equal(result.state.params[0], initial[0] + np.float32(0.5))
    assert svc.budget.used == 0 and svc.kept_chunks() == {}


def test_a_node_hears_of_a_round_on_its_stream_and_never_polls(tmp_path: Path, make_keys: Any) -> None:
    """With a 60 s heartbeat a polling node would wait a minute per round; a subscribed one does not wait."""
    keys, allow = make_keys(2)
    svc = service(tmp_path, allow, 2, 3, heartbeat_s=60.0, node_timeout_s=120.0)
    polls: list[bytes] = []
    original = svc.poll

    def counting_poll(raw: bytes, md: Any) -> bytes:
        polls.append(raw)
        return original(raw, md)

    svc.poll = counting_poll  # type: ignore[method-assign]
    result = federate_nodes(svc, keys, [np.zeros(4, np.float32)], 3, 1.0, heartbeat_s=60.0, node_timeout_s=120.0)
    assert [r.participants for r in result.history.rounds] == [2, 2, 2]
    assert polls == []
    np.testing.assert_array_equal(result.state.params[0], np.full(4, 3.0, np.float32))


def test_federated_evaluation_over_grpc_equals_the_simulations(tmp_path: Path, make_keys: Any) -> None:
    from fedge.config import from_dict
    from fedge.federation import build, execute

    keys, allow = make_keys(4)
    raw = {
        "seed": 11,
        "rounds": 3,
        "data": {"num_clients": 4},
        "model": {"name": "logreg", "framework": "numpy"},
        "strategy": {"name": "fedavg"},
        "training": {"clients_per_round": 4, "local_epochs": 1},
        "evaluation": {"centralized": False, "federated_clients": -1},
    }
    sim = execute(build(from_dict(raw)))
    exp = from_dict({**raw, "deploy": bare_deploy(tmp_path, allow, 4)})
    t, port, out = serve_in_thread(exp)
    for i in range(4):
        start_node(port, keys[i], None, i)
    t.join(90)
    stop_nodes()
    served = out["served"]
    got = [(r.fed_test_loss, r.fed_test_accuracy) for r in served.history]
    want = [(r.fed_test_loss, r.fed_test_accuracy) for r in sim.history]
    assert all(np.isfinite(loss) for loss, _ in got)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert served.history.rounds[-1].extra["client_acc_mean"] == pytest.approx(
        sim.history.rounds[-1].extra["client_acc_mean"], rel=1e-6
    )
