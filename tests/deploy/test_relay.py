"""``fedge relay`` over real gRPC on loopback: relays between a ``serve`` cloud and real nodes.

Each relay is a node to its parent (its own key, marked ``relay=N`` in the parent's allow-list)
and a server to its children (its own port, allow-list and SQLite state); the cloud is
``fedge serve``'s :func:`~fedge.deploy.server.serve`. The served results are compared with the
simulation of the same experiment: flat FedAvg for ``kappa1 = 1`` at any depth, the simulated
relays (``[hierarchy]``) for ``kappa1 > 1``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.config import from_dict
from fedge.core.errors import ConfigError, TransportError, ValidationError
from fedge.core.params import ParamSpec
from fedge.deploy import service as service_mod
from fedge.deploy.auth import RelayClaim, Signer, load_private, new_keys, parse_relays
from fedge.deploy.config import DeployConfig
from fedge.deploy.node import Backoff, Node
from fedge.deploy.relay import run_relay
from fedge.deploy.service import FedgeService, PushIn, partial_from_tree
from fedge.deploy.transport import check_partial
from fedge.deploy.wire import WireError
from fedge.engine.aggregator import PartialSum, Reducer, Validator
from fedge.federation import build, execute
from fedge.pipeline import Pipeline, RoundContext
from fedge.strategies.fedavg import FedAvg

from .conftest import FEDGE, bare_deploy, free_port
from .test_transport import serve_in_thread, start_node, stop_nodes

pytestmark = pytest.mark.integration

RAW: dict[str, Any] = {
    "seed": 3,
    "rounds": 3,
    "data": {"num_clients": 4},
    "model": {"name": "logreg", "framework": "numpy"},
    "strategy": {"name": "fedavg"},
    "training": {"clients_per_round": 4, "local_epochs": 1},
}


def pub(key: Path, mark: str = "") -> str:
    return key.with_suffix(".pub").read_text().strip() + (f" {mark}" if mark else "") + "\n"


def keyring(tmp_path: Path, names: list[str]) -> dict[str, Path]:
    return {n: new_keys(tmp_path / "keys", n)[0] for n in names}


def relay_config(tmp_path: Path, name: str, children: list[str], port: int, **kw: Any) -> DeployConfig:
    """The child-facing side of relay ``name``: its own port, allow-list (``children``'s lines) and state."""
    allow = tmp_path / f"allow-{name}.txt"
    allow.write_text("".join(children))
    return DeployConfig(
        host="127.0.0.1",
        port=port,
        state=str(tmp_path / f"{name}.db"),
        allow_list=str(allow),
        insecure=True,
        min_nodes=1 << 30,  # every client id of its block (a relay waits for at most those)
        heartbeat_s=0.2,
        node_timeout_s=3.0,
        wait_s=30.0,
        round_deadline_s=30.0,
        examples_cap=0.0,
        norm_cap=0.0,
        **kw,
    )


def start_relay(
    parent: int, key: Path, cfg: DeployConfig, kappa1: int | None = 1, partition: int = -1
) -> threading.Thread:
    """Relay ``key`` to the parent on port ``parent``; ``partition`` is the first client id of its block
    (-1: the parent's first free block), so that its children keep their dataset partitions."""
    t = threading.Thread(
        target=run_relay,
        args=(f"127.0.0.1:{parent}", Signer(load_private(key)), cfg),
        kwargs={"kappa1": kappa1, "partition": partition, "insecure": True, "backoff": Backoff(give_up_s=30)},
        daemon=True,
    )
    t.start()
    return t


def cloud(raw: dict[str, Any], tmp_path: Path, allow_lines: str, **deploy: Any) -> tuple[threading.Thread, int, Any]:
    allow = tmp_path / "allow-cloud.txt"
    allow.write_text(allow_lines)
    d = {**bare_deploy(tmp_path, allow, raw["data"]["num_clients"]), "round_deadline_s": 60.0, **deploy}
    return serve_in_thread(from_dict({**raw, "deploy": d}))


def close_to(a: list[np.ndarray], b: list[np.ndarray], atol: float = 1e-6) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=atol)


def start_children(
    keys: dict[str, Path],
    ports: dict[int, int],
    *,
    kind: Callable[[int], type[Node]] = lambda cid: Node,
    factory: Callable[[int], Any] = lambda cid: None,
    give_up_s: float = 30.0,
) -> list[Node]:
    """Node threads for client ids ``ports`` (id -> the port of its relay or server), each with key
    ``d<id>``, of class ``kind(id)`` and client factory ``factory(id)``; the caller stops them."""
    nodes = []
    for cid, port in ports.items():
        node = kind(cid)(
            f"127.0.0.1:{port}",
            Signer(load_private(keys[f"d{cid}"])),
            partition=cid,
            client_factory=factory(cid),
            backoff=Backoff(give_up_s=give_up_s),
            insecure=True,
        )
        nodes.append(node)
        threading.Thread(target=node.run, daemon=True).start()
    return nodes


def two_relays(tmp_path: Path, raw: dict[str, Any], kappa1: int | None = 1) -> Any:
    """Cloud <- relays r0, r1 (relay=2 each) <- devices 0, 1 and 2, 3: the cloud's ``Served``."""
    keys = keyring(tmp_path, ["r0", "r1", "d0", "d1", "d2", "d3"])
    t, port, out = cloud(raw, tmp_path, pub(keys["r0"], "relay=2") + pub(keys["r1"], "relay=2"))
    for r in range(2):
        kids = [f"d{2 * r}", f"d{2 * r + 1}"]
        cfg = relay_config(tmp_path, f"r{r}", [pub(keys[k]) for k in kids], free_port())
        start_relay(port, keys[f"r{r}"], cfg, kappa1, partition=2 * r)
        for k in kids:
            start_node(cfg.port, keys[k], None, int(k[1:]))
    t.join(120)
    stop_nodes()
    assert not t.is_alive(), "the cloud did not finish"
    return out["served"]


def test_depth_two_with_kappa1_one_is_flat_fedavg(tmp_path: Path) -> None:
    sim = execute(build(from_dict(RAW)))
    served = two_relays(tmp_path, RAW)
    assert [(r.participants, r.failed) for r in served.history] == [(4, 0)] * 3
    close_to(served.result.state.params, sim.state.params)


def test_depth_three_with_kappa1_one_is_flat_fedavg(tmp_path: Path) -> None:
    """device -> zonal relay -> vehicle relay -> cloud: z0 serves devices 0, 1 and z1 devices 2, 3; the
    vehicle relay v (relay=4 in the cloud's list) serves z0 and z1 (relay=2 each in its own list)."""
    sim = execute(build(from_dict(RAW)))
    keys = keyring(tmp_path, ["v", "z0", "z1", "d0", "d1", "d2", "d3"])
    t, port, out = cloud(RAW, tmp_path, pub(keys["v"], "relay=4"))
    vcfg = relay_config(tmp_path, "v", [pub(keys["z0"], "relay=2"), pub(keys["z1"], "relay=2")], free_port())
    start_relay(port, keys["v"], vcfg)
    for z in range(2):
        kids = [f"d{2 * z}", f"d{2 * z + 1}"]
        zcfg = relay_config(tmp_path, f"z{z}", [pub(keys[k]) for k in kids], free_port())
        start_relay(vcfg.port, keys[f"z{z}"], zcfg, partition=2 * z)
        for k in kids:
            start_node(zcfg.port, keys[k], None, int(k[1:]))
    t.join(120)
    stop_nodes()
    assert not t.is_alive()
    served = out["served"]
    assert [(r.participants, r.failed) for r in served.history] == [(4, 0)] * 3
    close_to(served.result.state.params, sim.state.params)


def test_kappa1_two_over_grpc_is_the_simulated_hierfavg(tmp_path: Path) -> None:
    """The relays run the simulation's edge steps, re-basing included, and each child trains edge
    step k with the generator a simulated child of step k has: the results agree to float32
    rounding (1e-6), and differ from flat FedAvg."""
    hier = {**RAW, "hierarchy": {"enabled": True, "zones_per_vehicle": 2, "kappa1": 2}}
    sim = execute(build(from_dict(hier)))
    flat = execute(build(from_dict(RAW)))
    served = two_relays(tmp_path, RAW, kappa1=2)
    assert [(r.participants, r.failed) for r in served.history] == [(4, 0)] * 3
    close_to(served.result.state.params, sim.state.params)
    gap = max(float(np.abs(a - b).max()) for a, b in zip(sim.state.params, flat.state.params, strict=True))
    assert gap > 1e-4, "kappa1 = 2 should not be the flat round"


def test_a_relay_never_sends_its_parent_a_childs_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every byte each server receives in Pushes is kept; each child's float32 update, as its relay
    decoded it, is searched for in what the cloud received (and found in what the relay received)."""
    received: dict[int, list[bytes]] = {}
    deltas: list[bytes] = []
    open_, add, decode = FedgeService.push_open, PushIn.add, service_mod.update_from_tree

    def recording_open(self: FedgeService, first: bytes, md: Any) -> Any:
        received.setdefault(id(self), []).append(first)
        return open_(self, first, md)

    def recording_add(self: PushIn, raw: bytes, held: Any) -> None:
        received.setdefault(id(self.svc), []).append(raw)
        add(self, raw, held)

    def recording_decode(tree: Any, client_id: int, spec: Any) -> Any:
        update = decode(tree, client_id, spec)
        deltas.append(np.concatenate([d.ravel() for d in update.delta]).astype(np.float32).tobytes())
        return update

    services: list[FedgeService] = []
    init = FedgeService.__init__

    def recording_init(self: FedgeService, **kw: Any) -> None:
        init(self, **kw)
        services.append(self)

    monkeypatch.setattr(FedgeService, "push_open", recording_open)
    monkeypatch.setattr(PushIn, "add", recording_add)
    monkeypatch.setattr(service_mod, "update_from_tree", recording_decode)
    monkeypatch.setattr(FedgeService, "__init__", recording_init)
    served = two_relays(tmp_path, {**RAW, "rounds": 2})
    assert [r.participants for r in served.history] == [4, 4]
    cloud_svc = services[0]  # the cloud's service is built first, then the relays' (on their first join)
    to_cloud = b"".join(received[id(cloud_svc)])
    to_relays = b"".join(b for s in services[1:] for b in received.get(id(s), []))
    assert len(deltas) == 8 and to_cloud  # 4 children x 2 rounds decoded by the relays; the relays pushed
    for secret in deltas:
        assert len(secret) >= 64
        windows = [secret[i : i + 16] for i in range(0, len(secret) - 16, 16)]
        assert any(w in to_relays for w in windows), "the search does not find an update where it was sent"
        assert not any(w in to_cloud for w in windows), "a child's update reached the cloud"


def relay_command(tmp_path: Path, parent: int, keys: dict[str, Path], port: int, state: Path) -> list[str]:
    """``fedge relay`` for relay r0 (children d0 and d1) on ``port`` with its SQLite ``state``."""
    allow = tmp_path / "allow-r0.txt"
    allow.write_text(pub(keys["d0"]) + pub(keys["d1"]))
    return [
        *FEDGE,
        "relay",
        "--parent",
        f"127.0.0.1:{parent}",
        "--key",
        str(keys["r0"]),
        "--partition",
        "0",
        "--insecure",
        "--port",
        str(port),
        "--state",
        str(state),
        "--allow",
        str(allow),
        "--serve-insecure",
        "--give-up",
        "60",
        "--set",
        "deploy.heartbeat_s=0.2",
        "--set",
        "deploy.node_timeout_s=3",
        "--set",
        "deploy.examples_cap=0",
        "--set",
        "deploy.norm_cap=0",
        "-q",
    ]


def killed_relay(tmp_path: Path, raw: dict[str, Any], node_timeout_s: float, wait_for_round: int = 0) -> Any:
    """Cloud <- relay r0 as a `fedge relay` process (children d0, d1) and r1 in a thread (d2, d3).

    Round 2's child 1 trains slowly and r0 is SIGKILLed while it waits for it; r0 is restarted on
    the same --state at once, or once the cloud has recorded round ``wait_for_round``. Returns the
    cloud's ``Served``, the restarted relay's output, and r0's stored client ids.
    """
    keys = keyring(tmp_path, ["r0", "r1", "d0", "d1", "d2", "d3"])
    t, port, out = cloud(
        raw,
        tmp_path,
        pub(keys["r0"], "relay=2") + pub(keys["r1"], "relay=2"),
        round_min_nodes=4,
        node_timeout_s=node_timeout_s,
    )
    r0_port, r0_state = free_port(), tmp_path / "r0.db"
    cmd = relay_command(tmp_path, port, keys, r0_port, r0_state)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    log = open(tmp_path / "r0.log", "wb")  # noqa: SIM115 (closed below, after the kill)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    cfg1 = relay_config(tmp_path, "r1", [pub(keys["d2"]), pub(keys["d3"])], free_port())
    start_relay(port, keys["r1"], cfg1, partition=2)
    in_round_two = threading.Event()

    def slow(exp: Any, cid: int) -> Any:
        from fedge.deploy.node import partition_client

        client = partition_client(exp, cid)
        train = client.train

        def late_train(params: Any, cfg: Any, ctx: Any) -> Any:
            if ctx.round_num == 2 and not in_round_two.is_set():
                in_round_two.set()
                time.sleep(4.0)
            return train(params, cfg, ctx)

        client.train = late_train  # type: ignore[method-assign]
        return client

    ports = {0: r0_port, 1: r0_port, 2: cfg1.port, 3: cfg1.port}
    nodes = start_children(keys, ports, factory=lambda cid: slow if cid == 1 else None, give_up_s=60)
    try:
        if not in_round_two.wait(60):
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"round 2 never reached client 1; the relay said {(tmp_path / 'r0.log').read_text()}")
        time.sleep(0.5)
        proc.kill()
        assert proc.wait(10) == -signal.SIGKILL
        log.close()
        with sqlite3.connect(r0_state) as db:
            kept = dict(db.execute("SELECT client_id, node_id FROM nodes").fetchall())
            last = db.execute("SELECT value FROM meta WHERE key = 'last_round'").fetchone()
        assert sorted(kept) == [0, 1] and last == ("1",)
        if wait_for_round:
            end = time.monotonic() + 60
            while not recorded(tmp_path / "run.db", wait_for_round):
                assert time.monotonic() < end, f"the cloud never closed round {wait_for_round} without r0"
                time.sleep(0.1)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        t.join(90)
        assert not t.is_alive(), "the cloud did not finish"
        said, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
    finally:
        log.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for node in nodes:
            node.stop()
    with sqlite3.connect(r0_state) as db:
        assert dict(db.execute("SELECT client_id, node_id FROM nodes").fetchall()) == kept
        assert db.execute("SELECT value FROM meta WHERE key = 'last_round'").fetchone() == ("3",)
    return out["served"], said


def recorded(state: Path, round_num: int) -> bool:
    """Whether the server whose SQLite state is ``state`` has recorded round ``round_num``."""
    if not state.exists():
        return False
    with sqlite3.connect(state, timeout=1.0) as db:
        try:
            return db.execute("SELECT 1 FROM rounds WHERE round = ?", (round_num,)).fetchone() is not None
        except sqlite3.OperationalError:  # not created yet
            return False


def test_a_relay_killed_mid_round_restarts_from_its_state_and_the_cloud_round_completes(tmp_path: Path) -> None:
    """r0 restarts on the same --state, its children rejoin it with their client ids, it rejoins the
    cloud with backoff while the cloud's round 2 is still open (the cloud counts a node lost after
    node_timeout_s = 30 s), runs that round again, and the run ends where flat FedAvg ends."""
    raw = {**RAW, "rounds": 3}
    sim = execute(build(from_dict(raw)))
    served, said = killed_relay(tmp_path, raw, node_timeout_s=30.0)
    records = served.history.rounds
    assert [r.round for r in records] == [1, 2, 3]
    assert [(r.participants, r.failed) for r in records] == [(4, 0)] * 3
    close_to(served.result.state.params, sim.state.params)
    assert b"relayed 2 rounds" in said  # rounds 2 and 3, by the restarted process


def test_a_relay_down_past_its_timeout_loses_its_round_and_rejoins_the_next(tmp_path: Path) -> None:
    """r0 stays down past the cloud's node_timeout_s = 3 s: the cloud closes round 2 with r1's two
    children (r0's two failed), waits for r0 before round 3 (round_min_nodes = 4), and r0, restarted
    on its state, relays round 3 with both children. The run equals the simulation in which clients
    0 and 1 fail in round 2."""
    raw = {**RAW, "rounds": 3}
    fed = build(from_dict(raw))
    make = fed.client_fn

    def failing_in_round_two(cid: int) -> Any:
        return fails_in_round(make(cid), 2, "its relay is down") if cid in (0, 1) else make(cid)

    fed.client_fn = failing_in_round_two
    sim = execute(fed)
    served, said = killed_relay(tmp_path, raw, node_timeout_s=3.0, wait_for_round=2)
    records = served.history.rounds
    assert [(r.round, r.participants, r.failed) for r in records] == [(1, 4, 0), (2, 2, 2), (3, 4, 0)]
    assert sorted(c for ids in records[1].dropped.values() for c in ids) == [0, 1]
    assert [(r.participants, r.failed) for r in sim.history.rounds] == [(4, 0), (2, 2), (4, 0)]
    close_to(served.result.state.params, sim.state.params)
    assert b"relayed 1 round" in said  # round 3 only: round 2 closed without this relay


def test_a_relay_whose_key_is_not_marked_relay_stops_with_one_line(tmp_path: Path) -> None:
    keys = keyring(tmp_path, ["r0", "d0"])
    one = {**RAW, "data": {"num_clients": 1}, "training": {"clients_per_round": 1}, "rounds": 1}
    t, port, _ = cloud(one, tmp_path, pub(keys["r0"]), wait_s=3)
    cfg = relay_config(tmp_path, "r0", [pub(keys["d0"])], free_port())
    with pytest.raises(TransportError, match="relay=N"):
        run_relay(f"127.0.0.1:{port}", Signer(load_private(keys["r0"])), cfg, insecure=True)
    t.join(30)


# -- the checks a parent makes of a relay's claims -------------------------------------------------


def test_allow_list_relay_markings(tmp_path: Path) -> None:
    (key,) = keyring(tmp_path, ["r"]).values()
    line = pub(key).strip()
    node = Signer(load_private(key)).node_id
    assert parse_relays(f"{line} relay=4 examples=100\n", "a") == {node: RelayClaim(4, 100)}
    assert parse_relays(f"{line}\n", "a") == {}
    for bad in ("relay=x", "relay=0", "examples=5", "weight=3"):
        with pytest.raises(ConfigError, match="a:1"):
            parse_relays(f"{line} {bad}\n", "a")


def tree(ids: list[int], n: int = 10, w: float = 10.0) -> dict[str, Any]:
    return {
        "terms": {"delta": [np.ones((3, 2))], "weight": [np.asarray([w])]},
        "client_ids": ids,
        "num_examples": n,
        "metrics": [{"num_examples": n / len(ids)} for _ in ids],
        "failures": [],
    }


def test_a_partial_sum_may_name_only_its_relays_selected_clients_and_claim_what_it_may() -> None:
    covers = frozenset({4, 5})
    got = partial_from_tree(tree([4, 5]), covers, RelayClaim(2, 5))
    assert got.client_ids == [4, 5] and got.num_examples == 10
    with pytest.raises(WireError, match="outside"):
        partial_from_tree(tree([4, 6]), covers, RelayClaim(2))
    with pytest.raises(WireError, match="examples=5"):
        partial_from_tree(tree([4, 5], n=11), covers, RelayClaim(2, 5))
    with pytest.raises(WireError, match="float64"):
        partial_from_tree({**tree([4]), "terms": {"delta": [np.ones(2, np.float32)]}}, covers, RelayClaim(2))


def test_the_round_checks_a_partial_sums_terms_against_its_strategy() -> None:
    spec = ParamSpec(((3, 2),))
    rctx = RoundContext(round_num=1, rng=np.random.default_rng(0), spec=spec, num_sampled=2)
    reducer = Reducer(FedAvg(), Pipeline([]), rctx, Validator(spec))
    ok = partial_from_tree(tree([0, 1]), frozenset({0, 1}), RelayClaim(2))
    check_partial(ok, reducer)
    bad_shape = PartialSum({"delta": [np.ones((2, 3))], "weight": [np.asarray([1.0])]}, [0], 1)
    nan = PartialSum({"delta": [np.full((3, 2), np.nan)], "weight": [np.asarray([1.0])]}, [0], 1)
    heavy = partial_from_tree(tree([0, 1], n=10, w=1e6), frozenset({0, 1}), RelayClaim(2))
    other = PartialSum({"delta": [np.ones((3, 2))]}, [0], 1)
    for item, why in ((bad_shape, "shapes"), (nan, "NaN"), (heavy, "weighs"), (other, "terms")):
        with pytest.raises(ValidationError, match=why):
            check_partial(item, reducer)


def test_a_parent_that_goes_away_is_rejoined_while_the_children_stay_connected(tmp_path: Path) -> None:
    """The cloud stops after round 1 (as SIGTERM stops it) and is resumed on the same port and state.
    Meanwhile the relay's children stay connected to it (its status says so); the relay rejoins the
    resumed cloud with backoff and the run ends where flat FedAvg ends."""
    from fedge.deploy.client import fetch_status
    from fedge.deploy.server import STOPPED_BY_SIGNAL, serve

    raw = {**RAW, "data": {"num_clients": 2}, "training": {"clients_per_round": 2, "local_epochs": 1}}
    sim = execute(build(from_dict(raw)))
    keys = keyring(tmp_path, ["r0", "d0", "d1"])
    allow = tmp_path / "allow-cloud.txt"
    allow.write_text(pub(keys["r0"], "relay=2"))
    exp = from_dict({**raw, "deploy": {**bare_deploy(tmp_path, allow, 2), "port": free_port()}})
    ready = threading.Event()
    out: dict[str, Any] = {}

    def stop_after_one_round(transport: Any) -> None:
        fit = transport.fit

        def fit_then_stop(*args: Any, **kw: Any) -> Any:
            yield from fit(*args, **kw)
            transport.stopping.set()

        transport.fit = fit_then_stop

    def first() -> None:
        out["first"] = serve(exp, on_ready=lambda _: ready.set(), transport_hook=stop_after_one_round)

    t = threading.Thread(target=first)
    t.start()
    assert ready.wait(30)
    cfg = relay_config(tmp_path, "r0", [pub(keys["d0"]), pub(keys["d1"])], free_port())
    start_relay(exp.section("deploy").port, keys["r0"], cfg, partition=0)
    for cid in range(2):
        start_node(cfg.port, keys[f"d{cid}"], None, cid)
    t.join(60)
    assert not t.is_alive() and out["first"].result.stopped_early == STOPPED_BY_SIGNAL
    assert fetch_status(f"127.0.0.1:{cfg.port}", insecure=True).connected == 2
    time.sleep(1.0)  # the relay retries its parent meanwhile
    assert fetch_status(f"127.0.0.1:{cfg.port}", insecure=True).connected == 2
    again = threading.Thread(target=lambda: out.update(second=serve(exp, resume=True, linger_s=0.5)))
    again.start()
    again.join(60)
    stop_nodes()
    assert not again.is_alive()
    served = out["second"]
    assert [r.participants for r in served.history] == [2, 2, 2]
    close_to(served.result.state.params, sim.state.params)


def test_a_relay_joins_a_masking_parents_session_and_refuses_edge_steps_it_cannot_mask(tmp_path: Path) -> None:
    """Under a parent with [secagg] a relay keeps the parent's secure aggregation for its own input; its
    children get the run's config with [secagg] off (the relay masks their sum) or, under --secagg, on.
    --secagg with kappa1 > 1 is refused in one line: between edge steps it would need each child's update."""
    from fedge.config.schema import to_toml
    from fedge.deploy.node import load_experiment
    from fedge.deploy.relay import Relay
    from fedge.secagg import SecureAggregation

    toml = to_toml(from_dict({**RAW, "secagg": {"enabled": True, "clip": 2.0}}), commented=False)
    (key,) = keyring(tmp_path, ["d0"]).values()
    for secagg in (False, True):
        relay = Relay(relay_config(tmp_path, f"r{secagg}", [pub(key)], free_port()), kappa1=1, secagg=secagg)
        try:
            relay.start(0, 2, "run", toml)
            assert isinstance(relay.up, SecureAggregation) and relay.up.cfg.clip == 2.0
            assert relay.svc is not None
            kids = load_experiment(relay.svc.config_toml).extensions["secagg"]
            assert kids.enabled is secagg and kids.clip == 2.0
        finally:
            relay.close(linger_s=0)
    with pytest.raises(ConfigError, match="--kappa1 1") as err:
        Relay(relay_config(tmp_path, "r2", [pub(key)], free_port()), kappa1=2, secagg=True)
    assert "\n" not in str(err.value)


def test_fedge_relay_bad_input_exits_2_in_one_line(tmp_path: Path) -> None:
    (key,) = keyring(tmp_path, ["r0"]).values()
    base = [*FEDGE, "relay", "--parent", "127.0.0.1:1", "--key", str(key), "--state", str(tmp_path / "r.db")]
    cases = [
        ([*base, "--allow", "a.txt"], "no CA given"),
        ([*base, "--allow", "a.txt", "--insecure", "--kappa1", "0"], "--kappa1 must be >= 1"),
        ([*base, "--allow", "a.txt", "--insecure", "--set", "rounds=3"], "only deploy.* settings"),
    ]
    for cmd, said in cases:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.db").exists()


class WithdrawingNode(Node):
    """A child that drops out of round 1's secure aggregation at its masked-input stage (it withdraws)."""

    def secagg(self, reply: Any) -> None:
        if reply.round == 1 and reply.secagg_stage == "masked_input":
            self._secagg_sent = ((1, "masked_input", str(reply.task_id)), b"")
        super().secagg(reply)


def fails_in_round(client: Any, round_num: int, why: str) -> Any:
    """``client``, whose training raises ``why`` in round ``round_num`` (and runs as before otherwise)."""
    train = client.train

    def train_but_in_that_round(params: Any, cfg: Any, ctx: Any) -> Any:
        if ctx.round_num == round_num:
            raise RuntimeError(why)
        return train(params, cfg, ctx)

    client.train = train_but_in_that_round
    return client


def failing_in_round_one(exp: Any, cid: int) -> Any:
    from fedge.deploy.node import partition_client

    return fails_in_round(partition_client(exp, cid), 1, "gone in round 1")


def one_relay_of_four(tmp_path: Path, raw: dict[str, Any], *, secagg: bool) -> Any:
    """Cloud <- one relay (relay=4) <- devices 0..3, device 3 lost in round 1: masked and withdrawing at
    the masked-input stage (``secagg``), or plain and failing its training."""
    keys = keyring(tmp_path, ["r", "d0", "d1", "d2", "d3"])
    t, port, out = cloud(raw, tmp_path, pub(keys["r"], "relay=4"))
    cfg = relay_config(tmp_path, "r", [pub(keys[f"d{i}"]) for i in range(4)], free_port(), secagg_stage_s=20.0)
    threading.Thread(
        target=run_relay,
        args=(f"127.0.0.1:{port}", Signer(load_private(keys["r"])), cfg),
        kwargs={"partition": 0, "insecure": True, "backoff": Backoff(give_up_s=30), "secagg": secagg},
        daemon=True,
    ).start()
    nodes = start_children(
        keys,
        dict.fromkeys(range(4), cfg.port),
        kind=lambda cid: WithdrawingNode if secagg and cid == 3 else Node,
        factory=lambda cid: failing_in_round_one if not secagg and cid == 3 else None,
    )
    t.join(120)
    for node in nodes:
        node.stop()
    assert not t.is_alive(), "the cloud did not finish"
    return out["served"]


def test_a_relay_with_secagg_forwards_its_survivors_masked_sum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SecAgg+ among a relay's children, one dropping out at the masked-input stage: the relay's sum is
    the three survivors' (within the fixed-point step of the masking), the same as a plain relay's
    whose fourth child failed; the run then goes on with all four, masked."""
    import fedge.deploy.transport as transport_mod

    raw = {**RAW, "rounds": 2}
    sums: list[PartialSum] = []
    check = transport_mod.check_partial

    def recording(item: PartialSum, reducer: Any) -> None:
        sums.append(item)
        check(item, reducer)

    monkeypatch.setattr(transport_mod, "check_partial", recording)
    masked = one_relay_of_four(tmp_path / "masked", raw, secagg=True)
    plain_sums, sums[:] = list(sums), []
    plain = one_relay_of_four(tmp_path / "plain", raw, secagg=False)
    masked_sums, plain_sums = plain_sums, list(sums)
    for served in (masked, plain):
        first, second = served.history.rounds
        assert first.participants == 3 and sorted(c for ids in first.dropped.values() for c in ids) == [3]
        assert second.participants == 4
    assert any("secagg" in reason for reason in masked.history.rounds[0].dropped)
    assert [sorted(s.client_ids) for s in masked_sums] == [[0, 1, 2], [0, 1, 2, 3]]
    for m, p in zip(masked_sums, plain_sums, strict=True):
        assert sorted(m.client_ids) == sorted(p.client_ids) and m.num_examples == p.num_examples
        np.testing.assert_allclose(m.terms["weight"][0], p.terms["weight"][0], rtol=1e-6)
        for a, b in zip(m.terms["delta"], p.terms["delta"], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4)
    close_to(masked.result.state.params, plain.result.state.params, atol=1e-4)
