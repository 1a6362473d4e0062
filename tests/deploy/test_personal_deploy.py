"""Ditto over real gRPC on loopback: each node keeps its personal model in its state file,
through the same mechanism as SCAFFOLD's ``c_i``, and ends where the simulation ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.deploy.node import StateFile
from fedge.strategies.ditto import STATE_KEY

from .conftest import bare_deploy
from .test_transport import serve_in_thread, start_node, stop_nodes

pytestmark = pytest.mark.integration

RAW: dict[str, Any] = {
    "seed": 5,
    "rounds": 3,
    "data": {"num_clients": 3},
    "model": {"name": "logreg", "framework": "numpy"},
    "strategy": {"name": "ditto"},
    "personalization": {"ditto_lambda": 0.5},
    "training": {"clients_per_round": 3, "local_epochs": 1},
    "evaluation": {"centralized": False},
}


def serve_three(exp: Any, keys: list[Path], tmp_path: Path) -> Any:
    """``exp`` served to three real nodes (client i on key i, state in ``tmp_path/n{i}``): its ``Served``."""
    t, port, out = serve_in_thread(exp)
    for i in range(3):
        start_node(port, keys[i], None, i, state_dir=tmp_path / f"n{i}")
    t.join(60)
    stop_nodes()
    return out["served"]


def test_ditto_personal_models_persist_in_the_node_state_files(tmp_path: Path, make_keys: Any) -> None:
    from fedge.config import from_dict
    from fedge.federation import build, execute

    keys, allow = make_keys(3)
    built = build(from_dict(RAW))
    sim = execute(built)
    served = serve_three(from_dict({**RAW, "deploy": bare_deploy(tmp_path, allow, 3)}), keys, tmp_path)
    assert [r.participants for r in served.history] == [3, 3, 3]
    for a, b in zip(served.result.state.params, sim.state.params, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for i in range(3):
        saved_round, before, after = StateFile(tmp_path / f"n{i}" / f"fedge-client-{i}.state").load()
        assert saved_round == 3
        want = built.transport.states[i][STATE_KEY]
        assert STATE_KEY in before, "the personal model from round 2 was not carried into round 3"
        got = [np.asarray(v, dtype=np.float32) for v in after[STATE_KEY]]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_ditto_nodes_report_their_personal_accuracy_as_the_simulation_does(tmp_path: Path, make_keys: Any) -> None:
    """Federated evaluation over gRPC: each node evaluates with its personal model from its state file."""
    from fedge.config import from_dict
    from fedge.federation import build, execute

    raw = {**RAW, "evaluation": {"centralized": False, "federated_clients": -1}}
    keys, allow = make_keys(3)
    sim = execute(build(from_dict(raw)))
    served = serve_three(from_dict({**raw, "deploy": bare_deploy(tmp_path, allow, 3)}), keys, tmp_path)
    for got, want in zip(served.history, sim.history, strict=True):
        assert "personal_acc_mean" in got.extra
        for key in ("personal_acc_mean", "personal_acc_worst10", "client_acc_mean"):
            assert got.extra[key] == pytest.approx(want.extra[key], rel=1e-6), key
        assert got.fed_test_accuracy == pytest.approx(want.fed_test_accuracy, rel=1e-6)
