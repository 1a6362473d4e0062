"""Relays inside their parent's SecAgg+ session, over real gRPC on loopback.

The cloud (``fedge serve``) runs ``[secagg]``; each ``fedge relay`` is one participant of the
cloud's session, its masked input the terms of its block (its children's sum). Every session's
revealed ring total is compared, word for word, with the sum of the encoded inputs its
survivors masked; the cloud's model with the flat (unmasked) run; every byte the cloud received
is searched for each relay's clear sum; and dropouts at both tiers leave the sum exact over the
survivors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.config import from_dict
from fedge.deploy import wire
from fedge.deploy.auth import Signer, load_private
from fedge.deploy.node import Backoff, Node
from fedge.deploy.relay import Relay, RelayNode, parent_secagg, run_relay, terms_tree
from fedge.deploy.service import FedgeService, PushIn
from fedge.engine.aggregator import PartialSum
from fedge.federation import build, execute
from fedge.secagg import client as C
from fedge.secagg import fixedpoint
from fedge.secagg import transform as T

from .conftest import FEDGE, free_port
from .test_relay import close_to, cloud, keyring, pub, relay_config, start_children
from .test_transport import start_node, stop_nodes

pytestmark = pytest.mark.integration

RAW: dict[str, Any] = {
    "seed": 5,
    "rounds": 2,
    "data": {"num_clients": 6},
    "model": {"name": "logreg", "framework": "numpy"},
    "strategy": {"name": "fedavg"},
    "training": {"clients_per_round": 6, "local_epochs": 1},
    "secagg": {"enabled": True, "clip": 4.0},
}
RING = 1 << 32


class Sessions:
    """Each secure aggregation session of the run, in every process tier: who masked which input
    words, and the ring total it revealed over which survivors."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inputs: dict[tuple[int, tuple[int, ...]], dict[int, np.ndarray]] = {}
        self.totals: dict[tuple[int, tuple[int, ...]], tuple[np.ndarray, list[int]]] = {}
        self.lock = threading.Lock()
        masked, run_round = C.masked_input, T.run_round

        def recording_masked(secrets: Any, inbox: Any, words: np.ndarray) -> Any:
            with self.lock:
                key = (secrets.setup.round_num, secrets.setup.cohort)
                self.inputs.setdefault(key, {})[secrets.client_id] = np.array(words, copy=True)
            return masked(secrets, inbox, words)

        def recording_round(setup: Any, transport: Any, **kw: Any) -> Any:
            res = run_round(setup, transport, **kw)
            with self.lock:
                self.totals[(setup.round_num, setup.cohort)] = (np.array(res.total, copy=True), list(res.included))
            return res

        monkeypatch.setattr(C, "masked_input", recording_masked)
        monkeypatch.setattr(T, "run_round", recording_round)

    def exact(self) -> None:
        """Every session's revealed total is the ring sum of its survivors' encoded inputs, to the bit."""
        assert self.totals
        for key, (total, included) in self.totals.items():
            words = self.inputs[key]
            want = sum((words[c].astype(np.uint64) for c in included), np.zeros(total.size, np.uint64)) % RING
            np.testing.assert_array_equal(total, want.astype(np.uint32), err_msg=f"session {key}")

    def session(self, round_num: int, cohort: tuple[int, ...]) -> tuple[np.ndarray, list[int], dict[int, np.ndarray]]:
        total, included = self.totals[(round_num, cohort)]
        return total, included, self.inputs[(round_num, cohort)]


def relay_thread(parent: int, key: Path, cfg: Any, first: int, *, secagg: bool) -> None:
    threading.Thread(
        target=run_relay,
        args=(f"127.0.0.1:{parent}", Signer(load_private(key)), cfg),
        kwargs={"partition": first, "insecure": True, "backoff": Backoff(give_up_s=30), "secagg": secagg},
        daemon=True,
    ).start()


def two_relays_of_three(tmp_path: Path, *, secagg: bool) -> Any:
    """Cloud [secagg] <- relays r0 (clients 0..2), r1 (clients 3..5); ``secagg``: relay --secagg too."""
    keys = keyring(tmp_path, ["r0", "r1", *(f"d{i}" for i in range(6))])
    t, port, out = cloud(RAW, tmp_path, pub(keys["r0"], "relay=3") + pub(keys["r1"], "relay=3"))
    for r in range(2):
        kids = [f"d{3 * r + i}" for i in range(3)]
        cfg = relay_config(tmp_path, f"r{r}", [pub(keys[k]) for k in kids], free_port(), secagg_stage_s=20.0)
        relay_thread(port, keys[f"r{r}"], cfg, 3 * r, secagg=secagg)
        for k in kids:
            start_node(cfg.port, keys[k], None, int(k[1:]))
    t.join(120)
    stop_nodes()
    assert not t.is_alive(), "the cloud did not finish"
    return out["served"]


def recorded_cloud_bytes(monkeypatch: pytest.MonkeyPatch) -> tuple[list[FedgeService], dict[int, list[bytes]]]:
    """Every byte each service receives in Pushes and SecAgg posts, by service."""
    received: dict[int, list[bytes]] = {}
    services: list[FedgeService] = []
    open_, add, post, init = FedgeService.push_open, PushIn.add, FedgeService.secagg_post, FedgeService.__init__

    def recording_open(self: FedgeService, first: bytes, md: Any) -> Any:
        received.setdefault(id(self), []).append(first)
        return open_(self, first, md)

    def recording_add(self: PushIn, raw: bytes, held: Any) -> None:
        received.setdefault(id(self.svc), []).append(raw)
        add(self, raw, held)

    def recording_post(self: FedgeService, raw: bytes, md: Any, more: Any = ()) -> bytes:
        parts = list(more)
        received.setdefault(id(self), []).extend([raw, *parts])
        return post(self, raw, md, parts)

    def recording_init(self: FedgeService, **kw: Any) -> None:
        init(self, **kw)
        services.append(self)

    monkeypatch.setattr(FedgeService, "push_open", recording_open)
    monkeypatch.setattr(PushIn, "add", recording_add)
    monkeypatch.setattr(FedgeService, "secagg_post", recording_post)
    monkeypatch.setattr(FedgeService, "__init__", recording_init)
    return services, received


def recorded_block_sums(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, PartialSum]]:
    """Each relay's clear sum of its block, as it turns it into its input for the cloud's session."""
    sums: list[tuple[int, PartialSum]] = []
    parent_input = Relay.parent_input

    def recording(self: Relay, item: PartialSum, round_num: int) -> Any:
        sums.append((round_num, item))
        return parent_input(self, item, round_num)

    monkeypatch.setattr(Relay, "parent_input", recording)
    return sums


def flat(item: PartialSum) -> np.ndarray:
    """A sum's terms in the order the secure aggregation lays them out (by name, then tensor)."""
    return np.concatenate([np.asarray(t, dtype=np.float64).ravel() for k in sorted(item.terms) for t in item.terms[k]])


def windows(arrays: list[np.ndarray]) -> list[bytes]:
    """16-byte slices of each array's float64 and float32 bytes (a sum as pushed, or cast down)."""
    out = []
    for dtype in (np.float64, np.float32):
        raw = np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays]).tobytes()
        out += [raw[i : i + 16] for i in range(0, len(raw) - 16, 16)]
    return out


@pytest.mark.parametrize("children_masked", [False, True], ids=["plain-children", "relay-secagg"])
def test_the_cloud_learns_only_the_sum_over_relays_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, children_masked: bool
) -> None:
    """Cloud [secagg] + 2 relays x 3 children. Each session's revealed ring total equals the sum of its
    participants' encoded inputs word for word: at the cloud the two relays' inputs; with relay
    --secagg each relay's input IS its children's revealed total, so the cloud's total is the ring sum
    of all six clients' encoded updates. Decoded, the cloud's total is the sum of the relays' clear sums
    to one fixed-point step per relay; the model is flat FedAvg's (which the plain relayed run equals to
    1e-6, test_relay.py) to 1e-4, and no relay's clear sum (float64 or float32) is in any byte the
    cloud received."""
    sessions = Sessions(monkeypatch)
    services, received = recorded_cloud_bytes(monkeypatch)
    sums = recorded_block_sums(monkeypatch)
    served = two_relays_of_three(tmp_path, secagg=children_masked)
    assert [(r.participants, r.failed) for r in served.history] == [(6, 0), (6, 0)]
    assert all(r.extra["secagg_k"] == 1.0 for r in served.history)
    # A masked relay sum is noted in the round's record as a clear one is (name, block, children).
    assert [sorted((v["first"], v["children"]) for v in r.extra["relay_sums"].values()) for r in served.history] == [
        [(0, 3), (3, 3)]
    ] * 2
    sessions.exact()
    for rnd in (1, 2):
        total, included, inputs = sessions.session(rnd, (0, 3))
        assert included == [0, 3]
        if children_masked:
            for first in (0, 3):
                block = tuple(range(first, first + 3))
                child_total, kids, _ = sessions.session(rnd, block)
                assert kids == list(block)
                np.testing.assert_array_equal(inputs[first], child_total)
            kid_words = [sessions.session(rnd, (f, f + 1, f + 2))[2] for f in (0, 3)]
            every = sum(w.astype(np.uint64) for words in kid_words for w in words.values())
            np.testing.assert_array_equal(total, (every % RING).astype(np.uint32))
    up = parent_secagg(from_dict(RAW))
    for rnd in (1, 2):
        revealed = fixedpoint.decode(sessions.session(rnd, (0, 3))[0], scale=up.scale) * up.max_weight
        clear = sum(flat(item) for r, item in sums if r == rnd)
        np.testing.assert_allclose(revealed, clear, rtol=0, atol=2 * up.max_weight / up.scale)
    sim = execute(build(from_dict({k: v for k, v in RAW.items() if k != "secagg"})))
    close_to(served.result.state.params, sim.state.params, atol=1e-4)

    assert sorted((rnd, tuple(sorted(s.client_ids))) for rnd, s in sums) == [
        (1, (0, 1, 2)),
        (1, (3, 4, 5)),
        (2, (0, 1, 2)),
        (2, (3, 4, 5)),
    ]
    to_cloud = b"".join(received[id(services[0])])  # the cloud's service is built first
    for _, item in sums:
        clear = [t for k in sorted(item.terms) for t in item.terms[k]]
        assert sum(a.size for a in clear) >= 8
        secret = windows(clear)
        as_pushed = bytes(wire.encode(terms_tree(item)).body)
        assert all(w in as_pushed for w in secret[: len(secret) // 2]), "the search misses a sum pushed in clear"
        assert not any(w in to_cloud for w in secret), "a relay's clear sum reached the cloud"


class WithdrawingRelayNode(RelayNode):
    """A relay that drops out of the cloud's round-1 session at its masked-input stage (it withdraws)."""

    def secagg(self, reply: Any) -> None:
        if reply.round == 1 and reply.secagg_stage == "masked_input":
            self._secagg_sent = ((1, "masked_input", str(reply.task_id)), b"")
        super().secagg(reply)


class WithdrawingNode(Node):
    """A child that drops out of its relay's round-1 session at the masked-input stage."""

    def secagg(self, reply: Any) -> None:
        if reply.round == 1 and reply.secagg_stage == "masked_input":
            self._secagg_sent = ((1, "masked_input", str(reply.task_id)), b"")
        super().secagg(reply)


def test_dropouts_at_both_tiers_leave_the_sum_exact_over_the_survivors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cloud [secagg] <- relay r0 (--secagg; clients 0..3), relay r1 (clients 4, 5) and plain nodes 6, 7:
    four participants. In round 1 child 3 withdraws at r0's masked-input stage and r1 at the cloud's:
    r0's session reveals clients 0 + 1 + 2, the cloud's r0's input + nodes 6 and 7's, each exactly;
    round 1 counts 5 clients and names 3, 4, 5 dropped at their stage; round 2 has all eight."""
    raw = {**RAW, "data": {"num_clients": 8}, "training": {"clients_per_round": 8, "local_epochs": 1}}
    sessions = Sessions(monkeypatch)
    keys = keyring(tmp_path, ["r0", "r1", *(f"d{i}" for i in range(8))])
    allow = pub(keys["r0"], "relay=4") + pub(keys["r1"], "relay=2") + pub(keys["d6"]) + pub(keys["d7"])
    t, port, out = cloud(raw, tmp_path, allow, secagg_stage_s=20.0)
    cfg0 = relay_config(tmp_path, "r0", [pub(keys[f"d{i}"]) for i in range(4)], free_port(), secagg_stage_s=20.0)
    relay_thread(port, keys["r0"], cfg0, 0, secagg=True)
    cfg1 = relay_config(tmp_path, "r1", [pub(keys["d4"]), pub(keys["d5"])], free_port())
    r1 = Relay(cfg1, 1)
    signer = Signer(load_private(keys["r1"]))
    r1_node = WithdrawingRelayNode(
        f"127.0.0.1:{port}", signer, r1, partition=4, insecure=True, backoff=Backoff(give_up_s=30)
    )

    def run_r1() -> None:
        try:
            r1_node.run()
        finally:
            r1.close()

    threading.Thread(target=run_r1, daemon=True).start()
    ports = {cid: cfg0.port if cid < 4 else cfg1.port if cid < 6 else port for cid in range(8)}
    nodes = start_children(keys, ports, kind=lambda cid: WithdrawingNode if cid == 3 else Node)
    t.join(120)
    for node in nodes:
        node.stop()
    assert not t.is_alive(), "the cloud did not finish"
    first, second = out["served"].history.rounds
    sessions.exact()
    _, kids, _ = sessions.session(1, (0, 1, 2, 3))
    assert kids == [0, 1, 2]
    _, included, inputs = sessions.session(1, (0, 4, 6, 7))
    assert included == [0, 6, 7] and set(inputs) == {0, 6, 7}  # r1 withdrew before masking
    assert first.participants == 5 and second.participants == 8 and second.failed == 0
    lost = {c: reason for reason, ids in first.dropped.items() for c in ids}
    assert sorted(lost) == [3, 4, 5]
    assert "secagg masked_input" in lost[3] and "withdrew" in lost[3]
    assert lost[4] == lost[5] and lost[4].startswith("secagg masked_input") and "withdrew" in lost[4]


def test_depth_three_masks_every_tier_and_each_total_is_its_inputs_sum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cloud [secagg] <- vehicle relay v (--secagg; relay=4) and a plain node 4; v <- zonal relays z0
    (--secagg; devices 0, 1) and z1 (plain; devices 2, 3). v's session has z0 and z1 as participants, so
    v learns only z0 + z1, and the cloud only v + node 4: each tier's revealed total is the ring sum of
    its inputs, v's input to the cloud is its own session's total and z0's is its devices', so the cloud's
    total holds devices 0 and 1's encoded updates to the bit. The model is flat FedAvg's."""
    raw = {**RAW, "data": {"num_clients": 5}, "training": {"clients_per_round": 5, "local_epochs": 1}}
    sessions = Sessions(monkeypatch)
    keys = keyring(tmp_path, ["v", "z0", "z1", *(f"d{i}" for i in range(5))])
    t, port, out = cloud(raw, tmp_path, pub(keys["v"], "relay=4") + pub(keys["d4"]), secagg_stage_s=20.0)
    zones = [pub(keys["z0"], "relay=2"), pub(keys["z1"], "relay=2")]
    vcfg = relay_config(tmp_path, "v", zones, free_port(), secagg_stage_s=20.0)
    relay_thread(port, keys["v"], vcfg, 0, secagg=True)
    for z in range(2):
        kids = [f"d{2 * z}", f"d{2 * z + 1}"]
        zcfg = relay_config(tmp_path, f"z{z}", [pub(keys[k]) for k in kids], free_port(), secagg_stage_s=20.0)
        relay_thread(vcfg.port, keys[f"z{z}"], zcfg, 2 * z, secagg=z == 0)
        for k in kids:
            start_node(zcfg.port, keys[k], None, int(k[1:]))
    start_node(port, keys["d4"], None, 4)
    t.join(120)
    stop_nodes()
    assert not t.is_alive(), "the cloud did not finish"
    served = out["served"]
    assert [(r.participants, r.failed) for r in served.history] == [(5, 0), (5, 0)]
    sessions.exact()
    for rnd in (1, 2):
        cloud_total, at_cloud, cloud_in = sessions.session(rnd, (0, 4))
        v_total, at_v, v_in = sessions.session(rnd, (0, 2))
        z0_total, at_z0, z0_in = sessions.session(rnd, (0, 1))
        assert at_cloud == [0, 4] and at_v == [0, 2] and at_z0 == [0, 1]
        np.testing.assert_array_equal(cloud_in[0], v_total)
        np.testing.assert_array_equal(v_in[0], z0_total)
        parts = [z0_in[0], z0_in[1], v_in[2], cloud_in[4]]
        whole = sum(w.astype(np.uint64) for w in parts) % RING
        np.testing.assert_array_equal(cloud_total, whole.astype(np.uint32))
    sim = execute(build(from_dict({k: v for k, v in raw.items() if k != "secagg"})))
    close_to(served.result.state.params, sim.state.params, atol=1e-4)


def test_a_round_takes_a_relays_sum_masked_only_under_secure_aggregation() -> None:
    """A masked push carries no terms; a round under [secagg] (no reducer) refuses a clear sum, a round
    without it refuses a masked one, each as a failure of every id the relay covers."""
    from fedge.core.params import ParamSpec
    from fedge.deploy.auth import RelayClaim
    from fedge.deploy.service import Relayed, _Verdict, partial_from_tree
    from fedge.deploy.transport import _relayed
    from fedge.deploy.wire import WireError
    from fedge.engine.aggregator import ClientFailure, Reducer, Validator
    from fedge.pipeline import Pipeline, RoundContext
    from fedge.strategies.fedavg import FedAvg

    covers = frozenset({4, 5})
    clear = PartialSum({"delta": [np.ones(2)], "weight": [np.asarray([3.0])]}, [4, 5], 3, [{}, {}])
    masked = partial_from_tree(terms_tree(clear, masked=True), covers, RelayClaim(2), participant=4)
    assert (masked.masked_by, masked.terms, masked.num_examples) == (4, {}, 3)
    with pytest.raises(WireError, match="carries no terms"):
        partial_from_tree({**terms_tree(clear), "masked": True}, covers, RelayClaim(2), participant=4)
    spec = ParamSpec(((2,),))
    rctx = RoundContext(round_num=1, rng=np.random.default_rng(0), spec=spec, num_sampled=2)
    reducer = Reducer(FedAvg(), Pipeline([]), rctx, Validator(spec))
    for item, round_reducer, why in ((clear, None, "not in clear"), (masked, reducer, "without secure aggregation")):
        verdict = _Verdict()
        out = list(_relayed(Relayed(covers, item), verdict, round_reducer))
        assert not verdict.accepted and why in verdict.reason
        assert all(isinstance(f, ClientFailure) and f.stage == "rejected" for f in out) and len(out) == 2
    verdict = _Verdict()
    (taken,) = _relayed(Relayed(covers, masked), verdict, None)
    assert verdict.accepted and taken is masked
    assert taken.participant().payload == {"block": [4, 5]}


def test_a_fedge_relay_process_joins_the_clouds_session(tmp_path: Path) -> None:
    """Relay r0 is a `fedge relay` process (its children in threads), r1 a relay in this process: the
    cloud's [secagg] session has both as participants, the run ends on flat FedAvg's model and r0 exits 0."""
    keys = keyring(tmp_path, ["r0", "r1", *(f"d{i}" for i in range(6))])
    t, port, out = cloud(RAW, tmp_path, pub(keys["r0"], "relay=3") + pub(keys["r1"], "relay=3"))
    r0_port = free_port()
    (tmp_path / "allow-r0.txt").write_text("".join(pub(keys[f"d{i}"]) for i in range(3)))
    cmd = [
        *FEDGE,
        "relay",
        "--parent",
        f"127.0.0.1:{port}",
        "--key",
        str(keys["r0"]),
        "--partition",
        "0",
        "--insecure",
        "--port",
        str(r0_port),
        "--state",
        str(tmp_path / "r0.db"),
        "--allow",
        str(tmp_path / "allow-r0.txt"),
        "--serve-insecure",
        "--give-up",
        "60",
        "--set",
        "deploy.heartbeat_s=0.2",
        "--set",
        "deploy.examples_cap=0",
        "--set",
        "deploy.norm_cap=0",
        "-q",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        cfg1 = relay_config(tmp_path, "r1", [pub(keys[f"d{i}"]) for i in range(3, 6)], free_port())
        relay_thread(port, keys["r1"], cfg1, 3, secagg=False)
        for cid in range(6):
            start_node(r0_port if cid < 3 else cfg1.port, keys[f"d{cid}"], None, cid)
        t.join(120)
        said, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        stop_nodes()
    assert not t.is_alive(), "the cloud did not finish"
    assert proc.returncode == 0, err.decode()
    assert b"relayed 2 rounds" in said
    served = out["served"]
    assert [(r.participants, r.failed) for r in served.history] == [(6, 0), (6, 0)]
    assert all(r.extra["secagg_k"] == 1.0 for r in served.history)
    sim = execute(build(from_dict({k: v for k, v in RAW.items() if k != "secagg"})))
    close_to(served.result.state.params, sim.state.params, atol=1e-4)
