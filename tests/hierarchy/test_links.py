"""Per-tier bytes, time and energy against hand computation; the run summary's totals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.config.schema import from_dict
from fedge.core.types import TrainConfig
from fedge.devices import ModelCost, builtin_catalog
from fedge.experiment import run_experiment
from fedge.federation import build, execute
from fedge.hierarchy import ChildWork, HierarchyBackend, HierarchyPolicy, Link, RelayTrace, Topology, tier_totals
from fedge.simulation.history import RoundRecord
from fedge.transport.inprocess import SequentialBackend

PARAMS = 64 * 10 + 10
"""The NumPy logreg on digits: 64 features x 10 classes + 10 biases."""
MODEL_BYTES = 4 * PARAMS


def _exp(hierarchy: dict[str, Any], clients: int = 12, per_round: int = 12) -> Any:
    return from_dict(
        {
            "seed": 1,
            "rounds": 2,
            "data": {"num_clients": clients},
            "model": {"name": "logreg", "framework": "numpy"},
            "training": {"clients_per_round": per_round, "local_epochs": 1, "batch_size": 32},
            "hierarchy": {"enabled": True, "zones_per_vehicle": 3, **hierarchy},
        }
    )


def test_bytes_per_tier_of_an_aggregating_hierarchy_by_hand() -> None:
    res = execute(build(_exp({"kappa1": 2})))
    for rec in res.history:
        # 4 vehicles: each gets the model once and sends one sum of delta (PARAMS) and weight (1) up.
        assert rec.extra["relays"] == 4
        assert rec.extra["wan_down_bytes"] == rec.downlink_bytes == 4 * MODEL_BYTES
        assert rec.extra["wan_up_bytes"] == rec.uplink_bytes == 4 * 4 * (PARAMS + 1)
        # 12 zones x 2 edge steps, each a model down and a delta up on the LAN.
        assert rec.extra["lan_down_bytes"] == 12 * 2 * MODEL_BYTES
        assert rec.extra["lan_up_bytes"] == 12 * 2 * MODEL_BYTES
        assert rec.extra["wan_bytes"] == 4 * MODEL_BYTES + 16 * (PARAMS + 1)


def test_a_forwarding_relay_carries_every_zone_over_the_wan() -> None:
    res = execute(build(_exp({"relay": "forward", "kappa1": 1})))
    for rec in res.history:
        assert rec.participants == 12 and rec.extra["relays"] == 4
        assert rec.extra["wan_down_bytes"] == rec.downlink_bytes == 12 * MODEL_BYTES
        assert rec.extra["wan_up_bytes"] == rec.uplink_bytes == 12 * MODEL_BYTES
        assert rec.extra["lan_up_bytes"] == rec.extra["lan_down_bytes"] == 12 * MODEL_BYTES


def test_time_and_energy_of_one_round_by_hand() -> None:
    ecu = builtin_catalog()["zonal-ecu"]
    model = ModelCost(forward_flops=1_000, num_params=100, activations=10)
    lan, up, down = Link(100.0, 0.1), Link(2.0, 80.0), Link(5.0, 80.0)
    backend = HierarchyBackend(SequentialBackend(), Topology(4, 2), kappa1=2)
    # Relay 0: children 0 (10 examples, 1 step) and 1 (30 examples, 2 steps), two edge steps; relay 1 idle.
    work = {0: ChildWork(10, 1, 400, 400), 1: ChildWork(30, 2, 400, 404)}
    backend.trace = [RelayTrace(0, steps=[work, work], down_bytes=400, up_bytes=404)]
    policy = HierarchyPolicy(
        backend,
        device=ecu,
        gateway=ecu,
        model=model,
        sizes=np.array([10, 30, 10, 10]),
        train=TrainConfig(epochs=1, batch_size=16),
        lan=lan,
        wan_up=up,
        wan_down=down,
    )
    rec = RoundRecord(round=1, participants=2, failed=0)
    policy.finish(1, rec, {})

    def lan_s(b: float) -> float:
        return b * 8 / 100e6 + 0.1e-3

    c0 = 3 * 1_000 * 10 / ecu.flops_fp32 + 1 * ecu.step_overhead_s
    c1 = 3 * 1_000 * 30 / ecu.flops_fp32 + 2 * ecu.step_overhead_s
    t0, t1 = lan_s(400) * 2 + c0, lan_s(400) + lan_s(404) + c1
    wan = (400 * 8 / 5e6 + 0.08) + (404 * 8 / 2e6 + 0.08)
    assert rec.extra["sim_time_s"] == pytest.approx(2 * max(t0, t1) + wan, rel=1e-12)
    assert policy.clock == pytest.approx(rec.extra["sim_time_s"])
    comm = 2 * (lan_s(400) * 2 + lan_s(400) + lan_s(404))
    device_j = 2 * ecu.power_train_w * (c0 + c1) + ecu.power_comm_w * comm
    assert rec.extra["device_energy_j"] == pytest.approx(device_j, rel=1e-12)
    assert rec.extra["gateway_energy_j"] == pytest.approx(ecu.power_comm_w * (wan + comm), rel=1e-12)
    assert rec.extra["energy_j"] == rec.extra["device_energy_j"]
    assert rec.uplink_bytes == 404 and rec.downlink_bytes == 400
    assert rec.extra["lan_bytes"] == 2 * (800 + 804)


def test_the_run_summary_holds_the_per_tier_totals(tmp_path: Path) -> None:
    exp = _exp({"kappa1": 2})
    result, out = run_experiment(exp, output=str(tmp_path / "run"))
    summary = json.loads((Path(out) / "summary.json").read_text())["hierarchy"]
    totals = tier_totals(result.history)
    assert totals is not None and summary == pytest.approx(totals)
    assert summary["wan_bytes"] == 2 * (4 * MODEL_BYTES + 16 * (PARAMS + 1))
    assert summary["sim_clock_s"] == pytest.approx(sum(r.extra["sim_time_s"] for r in result.history))
    assert tier_totals([RoundRecord(round=1, participants=1, failed=0)]) is None


def test_fedge_run_prints_the_per_tier_rows(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fedge.cli.main import cli

    cfg = tmp_path / "exp.toml"
    cfg.write_text(
        "rounds = 1\n[data]\nnum_clients = 8\n[model]\nname = 'logreg'\nframework = 'numpy'\n"
        "[training]\nclients_per_round = 8\n[hierarchy]\nenabled = true\nzones_per_vehicle = 4\nkappa1 = 1\n"
    )
    res = CliRunner().invoke(cli, ["run", str(cfg), "-o", str(tmp_path / "run")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    wan = 2 * MODEL_BYTES + 2 * 4 * (PARAMS + 1)
    assert f"/ {wan / 1e6:.2f} MB" in res.output and "bytes LAN / WAN" in res.output
    assert "simulated time / energy" in res.output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["hierarchy"]["wan_bytes"] == wan
