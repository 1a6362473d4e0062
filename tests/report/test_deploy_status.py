from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fedge.deploy.service import NodeStatus, ServerStatus
from fedge.report.deploy_status import ServeDashboard, ServerStatusSource, serve_dashboard_hook


def _status(round_num: int, phase: str, metrics: dict[str, Any]) -> ServerStatus:
    now = time.time()
    nodes = (
        NodeStatus("a" * 40, 0, "zonal-ecu", now - 2.0, True, True),
        NodeStatus("b" * 40, 1, "orin-nano", now - 60.0, False, False),
    )
    return ServerStatus("run1", phase, round_num, 5, 2, nodes, waiting_on=(0,), received=1, last_metrics=metrics)


def test_snapshot_maps_nodes_progress_and_keeps_the_curve() -> None:
    seq = iter(
        [
            _status(1, "training", {}),
            _status(1, "between rounds", {"round": 1, "participants": 2, "test_accuracy": 0.4}),
            _status(2, "training", {"round": 1, "participants": 2, "test_accuracy": 0.4}),
            _status(2, "between rounds", {"round": 2, "participants": 1, "test_accuracy": 0.6}),
        ]
    )
    source = ServerStatusSource(lambda: next(seq), poll_s=3600)
    try:
        first = source.snapshot()
        assert first["round_progress"] == {"received": 1, "expected": 2, "waiting_on": [0]}
        assert [(n["id"], n["profile"], n["state"]) for n in first["nodes"]] == [
            (0, "zonal-ecu", "busy"),
            (1, "orin-nano", "offline"),
        ]
        assert 1.5 < first["nodes"][0]["heartbeat_age_s"] < 30
        assert first["history"] == []
        source.snapshot()
        source.snapshot()
        last = source.snapshot()
        assert last["round_progress"] is None and last["mode"] == "deployment"
        assert [(r["round"], r["test_accuracy"]) for r in last["history"]] == [(1, 0.4), (2, 0.6)]
    finally:
        source.close()


def test_hook_is_off_unless_the_section_enables_it() -> None:
    from fedge.config.schema import from_dict

    assert serve_dashboard_hook(from_dict({})) is None
    hook = serve_dashboard_hook(from_dict({"dashboard": {"enabled": True, "port": 0, "token": "x"}}))
    assert isinstance(hook, ServeDashboard) and hook.token == "x"


@pytest.mark.integration
def test_dashboard_of_a_real_grpc_server_with_two_nodes(tmp_path: Path) -> None:
    from fedge.config.schema import from_dict
    from fedge.deploy.auth import Signer, load_private, new_keys
    from fedge.deploy.node import Backoff, Node
    from fedge.deploy.server import serve

    keys = [new_keys(tmp_path / "keys", f"n{i}")[0] for i in range(2)]
    allow = tmp_path / "allow.txt"
    allow.write_text("".join(k.with_suffix(".pub").read_text() for k in keys))
    exp = from_dict(
        {
            "seed": 1,
            "rounds": 3,
            "data": {"num_clients": 2},
            "model": {"name": "logreg", "framework": "numpy"},
            "training": {"clients_per_round": 2, "local_epochs": 1},
            "deploy": {
                "port": 0,
                "state": str(tmp_path / "run.db"),
                "min_nodes": 2,
                "heartbeat_s": 0.2,
                "allow_list": str(allow),
                "insecure": True,
                "wait_s": 60,
                "round_deadline_s": 60,
            },
            "dashboard": {"enabled": True, "port": 0, "token": "ops-token"},
        }
    )
    urls: list[str] = []
    hook = serve_dashboard_hook(exp, announce=urls.append)
    assert hook is not None
    ready = threading.Event()
    ports: list[int] = []
    done: dict[str, Any] = {}

    def main() -> None:
        done["served"] = serve(
            exp, on_ready=lambda p: (ports.append(p), ready.set()), transport_hook=hook, linger_s=0.5
        )

    server = threading.Thread(target=main)
    server.start()
    try:
        assert ready.wait(60)
        nodes = [
            Node(
                f"127.0.0.1:{ports[0]}",
                Signer(load_private(k)),
                partition=i,
                profile=("zonal-ecu", "orin-nano")[i],
                state_dir=tmp_path / f"n{i}",
                backoff=Backoff(give_up_s=20),
                insecure=True,
            )
            for i, k in enumerate(keys)
        ]
        threads = [threading.Thread(target=n.run, daemon=True) for n in nodes]
        for t in threads:
            t.start()
        server.join(120)
        for t in threads:
            t.join(20)
        assert "served" in done and len(done["served"].history) == 3
        url = urls[0]
        assert "/login?code=" in url and "ops-token" not in url
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url.split("login?")[0] + "api/status", timeout=10)
        assert denied.value.code == 401
        denied.value.close()
        req = urllib.request.Request(
            url.split("login?")[0] + "api/status", headers={"Authorization": "Bearer ops-token"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            snap = json.loads(r.read())
        assert sorted(n["profile"] for n in snap["nodes"]) == ["orin-nano", "zonal-ecu"]
        assert snap["rounds"] == 3 and snap["round"] == 3
        assert snap["history"][-1]["round"] == 3 and snap["history"][-1]["participants"] == 2
    finally:
        hook.close()
        server.join(30)
