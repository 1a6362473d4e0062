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


def _same_model(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


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
    _same_model(served.result.state.params, sim.state.params)
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


def _partial(strategy: str) -> dict[str, Any]:
    """A FedPer/FedRep run: an MLP whose last layer (two tensors) is each node's own head."""
    return {
        **RAW,
        "model": {"name": "mlp", "framework": "numpy", "hidden": [16]},
        "strategy": {"name": strategy},
        "personalization": {"head_tensors": 2, "head_epochs": 2},
        "evaluation": {"centralized": False, "federated_clients": -1},
    }


def _record_tasks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every round task the service opens (training and evaluation), as it opens them."""
    from fedge.deploy.service import FedgeService

    opened: list[Any] = []
    real = FedgeService._open

    def spy(self: FedgeService, *a: Any, **kw: Any) -> Any:
        opened.append(real(self, *a, **kw))
        return opened[-1]

    monkeypatch.setattr(FedgeService, "_open", spy)
    return opened


@pytest.mark.parametrize("strategy", ["fedper", "fedrep"])
def test_fedper_and_fedrep_over_grpc_send_only_the_body_and_end_as_the_simulation(
    strategy: str, tmp_path: Path, make_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the shared body travels, both ways; each node keeps its head in its state file."""
    from fedge.config import from_dict
    from fedge.deploy.service import _task_bytes
    from fedge.federation import build, execute
    from fedge.strategies.fedper import STATE_KEY as HEAD

    raw = _partial(strategy)
    keys, allow = make_keys(3)
    built = build(from_dict(raw))
    initial = [p.copy() for p in built.initial]
    sim = execute(built)
    tasks = _record_tasks(monkeypatch)
    served = serve_three(from_dict({**raw, "deploy": bare_deploy(tmp_path, allow, 3)}), keys, tmp_path)
    body, head = sum(p.nbytes for p in initial[:2]), sum(p.nbytes for p in initial[2:])
    assert [r.participants for r in served.history] == [3, 3, 3]
    _same_model(served.result.state.params, sim.state.params)
    for a, b in zip(served.result.state.params[2:], initial[2:], strict=True):
        np.testing.assert_array_equal(a, b)  # the server's head is never trained
    for got, want in zip(served.history, sim.history, strict=True):
        assert got.extra["personal_acc_mean"] == pytest.approx(want.extra["personal_acc_mean"], rel=1e-6)
        # each push is the body's bytes and a few hundred of framing: less than the head would add
        assert 3 * body <= got.uplink_bytes < 3 * (body + head)
    assert len(tasks) == 6 and all(_task_bytes(t) == body for t in tasks)
    for i in range(3):
        _, _, after = StateFile(tmp_path / f"n{i}" / f"fedge-client-{i}.state").load()
        for a, b in zip(after[HEAD], built.transport.states[i][HEAD], strict=True):
            np.testing.assert_allclose(np.asarray(a), b, atol=1e-6)


def test_a_restarted_node_keeps_its_head(tmp_path: Path, make_keys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node 2 is replaced by a fresh process-like Node on the same state folder between rounds 1 and 2:
    its personal accuracy afterwards is the uninterrupted run's."""
    from fedge.config import from_dict
    from fedge.deploy.transport import GrpcTransport
    from fedge.federation import build, execute

    from .test_transport import NODES

    raw = _partial("fedrep")
    keys, allow = make_keys(3)
    sim = execute(build(from_dict(raw)))
    real = GrpcTransport.available
    restarted: list[Any] = []

    def restart_before_round_2(self: GrpcTransport, round_num: int) -> list[int]:
        if round_num == 2 and not restarted:
            old, thread = next((n, t) for n, t in NODES if n.client_id == 2)
            old.stop()
            thread.join(10)
            assert not thread.is_alive()
            new, _ = start_node(port[0], keys[2], None, 2, state_dir=tmp_path / "n2")
            while new.client_id != 2:  # joined: the server now holds the new session for client 2
                thread.join(0.02)
            restarted.append(new)
        return real(self, round_num)

    monkeypatch.setattr(GrpcTransport, "available", restart_before_round_2)
    exp = from_dict({**raw, "deploy": bare_deploy(tmp_path, allow, 3)})
    t, p, out = serve_in_thread(exp)
    port = [p]
    for i in range(3):
        start_node(p, keys[i], None, i, state_dir=tmp_path / f"n{i}")
    t.join(60)
    stop_nodes()
    served = out["served"]
    assert len(restarted) == 1 and restarted[0].rounds_trained == 2
    assert [r.participants for r in served.history] == [3, 3, 3]
    for got, want in zip(served.history, sim.history, strict=True):
        assert got.extra["personal_acc_mean"] == pytest.approx(want.extra["personal_acc_mean"], rel=1e-6)
    _same_model(served.result.state.params, sim.state.params)


PROFILES = """
[half-mem]
description = "a device whose memory holds the half-width model, not the whole one"
flops_fp32 = 1e9
ram_mib = 0.04
uplink_mbps = 10
downlink_mbps = 10
latency_ms = 10
power_train_w = 1.0
source = "test"

[quarter-mem]
description = "a device whose memory holds the quarter-width model only"
flops_fp32 = 1e9
ram_mib = 0.02
uplink_mbps = 10
downlink_mbps = 10
latency_ms = 10
power_train_w = 1.0
source = "test"
"""


def _heterofl(
    tmp_path: Path, ratios: list[float] | None = None, strategy: str = "heterofl", fleet: dict[str, float] | None = None
) -> dict[str, Any]:
    """Three devices whose memory fits widths 1, 1/2 and 1/4 of a 64-unit MLP (by default).

    A served run simulates no device (its devices are real), so the simulations compared with
    it leave nobody out: every client has a width that fits it."""
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(PROFILES)
    return {
        **RAW,
        "seed": 2,
        "rounds": 2,
        "model": {"name": "mlp", "framework": "numpy", "hidden": [64]},
        "strategy": {"name": strategy},
        "heterofl": {"ratios": ratios or [1.0, 0.5, 0.25, 0.125]},
        "devices": {
            "enabled": True,
            "profiles": str(profiles),
            "fleet": fleet or {"orin-nano": 0.33, "half-mem": 0.34, "quarter-mem": 0.33},
        },
        "evaluation": {"centralized": False, "federated_clients": -1},
    }


def test_heterofl_over_grpc_sends_each_width_class_its_sub_model_and_ends_as_the_simulation(
    tmp_path: Path, make_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedge.config import from_dict
    from fedge.federation import build, execute
    from fedge.strategies.heterofl import width_shapes

    raw = _heterofl(tmp_path)
    keys, allow = make_keys(3)
    built = build(from_dict(raw))
    widths = dict(built.strategy.widths)  # type: ignore[attr-defined]
    assert sorted(widths.values()) == [0.25, 0.5, 1.0]
    shapes = [p.shape for p in built.initial]
    sim = execute(built)
    tasks = _record_tasks(monkeypatch)
    served = serve_three(from_dict({**raw, "deploy": bare_deploy(tmp_path, allow, 3)}), keys, tmp_path)
    assert [r.participants for r in served.history] == [3, 3]
    _same_model(served.result.state.params, sim.state.params)
    for got, want in zip(served.history, sim.history, strict=True):
        assert got.fed_test_accuracy == pytest.approx(want.fed_test_accuracy, rel=1e-6)
        assert got.extra["client_acc_mean"] == pytest.approx(want.extra["client_acc_mean"], rel=1e-6)
    assert len(tasks) == 4  # two rounds, each a training and an evaluation task
    for task in tasks:
        for cid, ratio in widths.items():
            sub = width_shapes(shapes, ratio, "mlp")
            assert task.classes[cid].header.total_bytes == 4 * sum(int(np.prod(s)) for s in sub)
            assert task.spec_for(cid).shapes == sub
        assert len({id(c) for c in task.classes.values()}) == 3  # one message per width class


def test_heterofl_over_grpc_with_every_ratio_one_is_fedavg(tmp_path: Path, make_keys: Any) -> None:
    from fedge.config import from_dict
    from fedge.federation import build, execute

    keys, allow = make_keys(3)
    whole = {"orin-nano": 1.0}
    fedavg = execute(build(from_dict(_heterofl(tmp_path, strategy="fedavg", fleet=whole))))
    raw = _heterofl(tmp_path, ratios=[1.0], fleet=whole)
    served = serve_three(from_dict({**raw, "deploy": bare_deploy(tmp_path, allow, 3)}), keys, tmp_path)
    assert [r.participants for r in served.history] == [3, 3]
    _same_model(served.result.state.params, fedavg.state.params)
    for got, want in zip(served.history, fedavg.history, strict=True):
        assert got.fed_test_accuracy == pytest.approx(want.fed_test_accuracy, rel=1e-6)


def test_a_heterofl_node_that_declares_its_device_gets_the_width_that_device_fits(
    tmp_path: Path, make_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every node declares ``quarter-mem`` (fedge join --profile): each is sent the quarter-width model,
    whatever device the fleet would have simulated for its client."""
    from fedge.config import from_dict
    from fedge.federation import build
    from fedge.strategies.heterofl import width_shapes

    raw = _heterofl(tmp_path)
    keys, allow = make_keys(3)
    shapes = [p.shape for p in build(from_dict(raw)).initial]
    tasks = _record_tasks(monkeypatch)
    t, port, out = serve_in_thread(from_dict({**raw, "deploy": bare_deploy(tmp_path, allow, 3)}))
    for i in range(3):
        start_node(port, keys[i], None, i, state_dir=tmp_path / f"n{i}", profile="quarter-mem")
    t.join(60)
    stop_nodes()
    assert [r.participants for r in out["served"].history] == [3, 3]
    quarter = width_shapes(shapes, 0.25, "mlp")
    for task in tasks:
        assert len({id(c) for c in task.classes.values()}) == 1
        assert all(task.spec_for(cid).shapes == quarter for cid in range(3))
