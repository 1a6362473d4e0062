from __future__ import annotations

import time
from typing import Any

from fedge.deploy.service import NodeStatus, ServerStatus
from fedge.report.deploy_status import ServeDashboard, ServerStatusSource, serve_dashboard_hook


def _status(round_num: int, phase: str, metrics: dict[str, Any]) -> ServerStatus:
    now = time.time()
    nodes = (NodeStatus("a" * 40, 0, "zonal-ecu", now - 2.0, True, True),
             NodeStatus("b" * 40, 1, "orin-nano", now - 60.0, False, False))
    return ServerStatus("run1", phase, round_num, 5, 2, nodes, waiting_on=(0,), received=1,
                        last_metrics=metrics)


def test_snapshot_maps_nodes_progress_and_keeps_the_curve() -> None:
    seq = iter([
        _status(1, "training", {}),
        _status(1, "between rounds", {"round": 1, "participants": 2, "test_accuracy": 0.4}),
        _status(2, "training", {"round": 1, "participants": 2, "test_accuracy": 0.4}),
        _status(2, "between rounds", {"round": 2, "participants": 1, "test_accuracy": 0.6}),
    ])
    source = ServerStatusSource(lambda: next(seq), poll_s=3600)
    try:
        first = source.snapshot()
        assert first["round_progress"] == {"received": 1, "expected": 2, "waiting_on": [0]}
        assert [(n["id"], n["profile"], n["state"]) for n in first["nodes"]] == [
            (0, "zonal-ecu", "busy"), (1, "orin-nano", "offline")]
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
