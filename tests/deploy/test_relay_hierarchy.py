"""One experiment file for the simulated and the served tree: ``[hierarchy]`` drives ``fedge serve``.

Served, the section says what the relays must be (``relay=zones_per_vehicle`` at a vehicle's first
zone, no zone joining the cloud itself) and how many edge steps they run (``kappa1``, sent in each
TRAIN): `fedge relay` processes started without ``--kappa1`` compute what the simulation computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedge.config import from_dict
from fedge.deploy.auth import Signer, Verifier, load_private
from fedge.deploy.proto import pb
from fedge.deploy.service import FedgeService, Refused
from fedge.deploy.store import Store
from fedge.federation import build, execute

from .conftest import free_port
from .test_relay import RAW, close_to, cloud, keyring, pub, relay_config, start_relay, two_relays

pytestmark = pytest.mark.integration

ZONAL: dict[str, Any] = {**RAW, "hierarchy": {"enabled": True, "zones_per_vehicle": 2, "kappa1": 2}}


def test_the_served_tree_of_a_hierarchy_file_is_its_simulation(tmp_path: Path) -> None:
    """The same [hierarchy] file, simulated and served: the relays, started without --kappa1, run the
    file's two edge steps (sent by the cloud) and the models agree to float32 rounding."""
    sim = execute(build(from_dict(ZONAL)))
    served = two_relays(tmp_path, ZONAL, kappa1=None)
    assert [(r.participants, r.failed) for r in served.history] == [(4, 0)] * 3
    close_to(served.result.state.params, sim.state.params)
    flat = execute(build(from_dict(RAW)))
    assert max(float(abs(a - b).max()) for a, b in zip(sim.state.params, flat.state.params, strict=True)) > 1e-4


def test_a_hierarchy_cloud_takes_only_vehicle_relays_at_a_vehicles_first_zone(tmp_path: Path) -> None:
    """The service of a [hierarchy] run (fanout = zones_per_vehicle): a plain zone, a relay of the
    wrong size and a block that does not start a vehicle are refused in one line; vehicles are
    taken at 0..1 and 2..3."""
    keys = keyring(tmp_path, ["zone", "small", "v0", "v1"])
    allow = tmp_path / "allow.txt"
    allow.write_text(
        pub(keys["zone"]) + pub(keys["small"], "relay=1") + pub(keys["v0"], "relay=2") + pub(keys["v1"], "relay=2")
    )
    svc = FedgeService(
        store=Store(tmp_path / "s.db"), verifier=Verifier(allow), run_id="r1", config_toml="", num_clients=4, rounds=1
    )
    svc.fanout = 2

    def join(name: str, partition: int = -1) -> str:
        req = pb.JoinRequest(partition=partition).SerializeToString()
        try:
            rep = pb.JoinReply.FromString(svc.join(req, Signer(load_private(keys[name])).metadata("Join", req)))
        except Refused as exc:
            assert "\n" not in str(exc)
            return str(exc)
        return f"client {rep.client_id}"

    said = join("zone", 0)
    assert "serves vehicle relays of zones_per_vehicle = 2" in said and "not marked relay=N" in said
    assert "is marked relay=1" in join("small")
    assert "not a vehicle's first zone" in join("v0", 1)
    assert (join("v1"), join("v0")) == ("client 0", "client 2")
    svc.refusals.close()


def test_a_relay_started_with_another_kappa1_than_the_files_is_told_in_one_line(tmp_path: Path) -> None:
    """The relay's --kappa1 3 against the file's 2: each round it refuses, naming both, and the cloud
    records its children as failed with that reason."""
    keys = keyring(tmp_path, ["r0", "d0", "d1"])
    raw = {**ZONAL, "rounds": 1, "data": {"num_clients": 2}, "training": {"clients_per_round": 2, "local_epochs": 1}}
    t, port, out = cloud(raw, tmp_path, pub(keys["r0"], "relay=2"), round_deadline_s=20.0)
    cfg = relay_config(tmp_path, "r0", [pub(keys["d0"]), pub(keys["d1"])], free_port())
    start_relay(port, keys["r0"], cfg, kappa1=3, partition=0)
    from .test_transport import start_node, stop_nodes

    for cid in range(2):
        start_node(cfg.port, keys[f"d{cid}"], None, cid)
    t.join(90)
    stop_nodes()
    assert not t.is_alive()
    (record,) = out["served"].history.rounds
    assert record.participants == 0
    reasons = " ".join(record.dropped)
    assert "asks for kappa1 = 2" in reasons and "--kappa1 3" in reasons
