"""FedBuff over gRPC: a real server and real nodes on loopback run ``[async]`` as the simulation does.

With ``K = C =`` the cohort the deployed run is the simulated one (and synchronous FedAvg);
nodes of different speeds contribute in proportion to their speed; a hung node's slot is
freed at its deadline; a server killed with SIGKILL resumes at the exact version; secure
aggregation and central DP per applied step equal the simulation's.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.clients.base import TrainResult
from fedge.config import from_dict, load
from fedge.experiment import load_params_npz
from fedge.federation import build, execute

from .conftest import bare_deploy, free_port, served_noise_key, simulated_with_noise_key
from .test_integration import last_round, processes, spawn, wait_for
from .test_personal_deploy import serve_three
from .test_transport import serve_in_thread, start_node, stop_nodes

pytestmark = pytest.mark.integration

RAW: dict[str, Any] = {
    "seed": 7,
    "rounds": 3,
    "data": {"num_clients": 3},
    "model": {"name": "logreg", "framework": "numpy"},
    "strategy": {"name": "fedavg"},
    # One batch per client: every update takes one local step, so the virtual clock has them all arrive at once.
    "training": {"clients_per_round": 3, "local_epochs": 1, "batch_size": 10_000, "lr": 0.3},
}
WHOLE = {"enabled": True, "buffer_size": 3, "concurrency": 3}
"""K = C = the population: every step sums one update of every node, none stale."""


def with_async(raw: dict[str, Any], **cfg: Any) -> dict[str, Any]:
    return {**raw, "async": {**WHOLE, **cfg}}


def served(raw: dict[str, Any], tmp_path: Path, keys: list[Path], allow: Path, **deploy: Any) -> Any:
    return serve_three(from_dict({**raw, "deploy": {**bare_deploy(tmp_path, allow, 3), **deploy}}), keys, tmp_path)


def assert_same_model(got: Any, want: Any, atol: float = 1e-6) -> None:
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def test_a_whole_cohort_buffer_over_grpc_is_the_simulated_async_run_and_synchronous_fedavg(
    tmp_path: Path, make_keys: Any
) -> None:
    keys, allow = make_keys(3)
    sync = execute(build(from_dict(RAW)))
    sim = execute(build(from_dict(with_async(RAW))))
    out = served(with_async(RAW), tmp_path, keys, allow)
    recs = out.history.rounds
    assert [r.extra["version"] for r in recs] == [1, 2, 3]
    assert all(r.extra["staleness_max"] == 0 and sorted(r.extra["applied_clients"]) == [0, 1, 2] for r in recs)
    assert [r.extra["updates_applied_total"] for r in recs] == [3, 6, 9]
    assert_same_model(out.result.state.params, sim.state.params)
    assert_same_model(out.result.state.params, sync.state.params)
    np.testing.assert_allclose([r.test_accuracy for r in recs], [r.test_accuracy for r in sim.history], atol=1e-6)


class Paced:
    """Client ``i`` adds ``0.01 (i + 1)`` to every weight, on ``10 (i + 1)`` examples; client 2 is slow.

    Client 2's ``k``-th training waits until clients 0 and 1 have trained ``10 k`` times together,
    so however fast the machine, it is slower than they are by construction, not by a clock.
    """

    fast_done = 0
    cond = threading.Condition()
    release = threading.Event()

    def __init__(self, cid: int) -> None:
        self.client_id, self.calls = cid, 0

    def train(self, params: Any, cfg: Any, ctx: Any) -> TrainResult:
        self.calls += 1
        if self.client_id == 2:
            with Paced.cond:
                Paced.cond.wait_for(lambda: Paced.fast_done >= 10 * self.calls or Paced.release.is_set(), 60)
        else:
            with Paced.cond:
                Paced.fast_done += 1
                Paced.cond.notify_all()
        step = np.float32(0.01 * (self.client_id + 1))
        return TrainResult([p + step for p in params], steps=1, loss=0.0, num_examples=10 * (self.client_id + 1))


def run_with_clients(raw: dict[str, Any], tmp_path: Path, factory: Any, release: threading.Event, **deploy: Any) -> Any:
    keys, allow = make_keys_for(tmp_path)
    exp = from_dict({**raw, "deploy": {**bare_deploy(tmp_path, allow, 3), **deploy}})
    t, port, out = serve_in_thread(exp)
    try:
        for i in range(3):
            start_node(port, keys[i], factory, i, state_dir=tmp_path / f"n{i}")
        t.join(90)
    finally:
        release.set()
        with Paced.cond:
            Paced.cond.notify_all()
        stop_nodes()
    return out["served"]


def make_keys_for(tmp_path: Path) -> tuple[list[Path], Path]:
    from fedge.deploy.auth import new_keys

    keys = [new_keys(tmp_path / "keys", f"n{i}")[0] for i in range(3)]
    allow = tmp_path / "allow.txt"
    allow.write_text("".join(k.with_suffix(".pub").read_text() for k in keys))
    return keys, allow


def test_fast_nodes_contribute_several_times_per_slow_nodes_one(tmp_path: Path) -> None:
    Paced.fast_done = 0
    Paced.release.clear()
    raw = with_async({**RAW, "rounds": 12, "evaluation": {"centralized": False}}, buffer_size=2)
    out = run_with_clients(raw, tmp_path, lambda exp, cid: Paced(cid), Paced.release)
    recs = out.history.rounds
    assert [r.round for r in recs] == list(range(1, 13))
    counts = Counter(c for r in recs for c in r.extra["applied_clients"])
    assert sum(counts.values()) == 24 == recs[-1].extra["updates_applied_total"]
    assert counts[2] >= 1
    assert min(counts[0], counts[1]) >= 3 * counts[2]
    slow_step = next(r for r in recs if 2 in r.extra["applied_clients"])
    # Its first update was sent at version 0 and waited for ten fast trainings: at least four steps.
    assert slow_step.extra["staleness_max"] >= 4


class Hangs:
    """Client 2's first training outlasts the round deadline; every other training is immediate."""

    release = threading.Event()

    def __init__(self, cid: int) -> None:
        self.client_id, self.calls = cid, 0

    def train(self, params: Any, cfg: Any, ctx: Any) -> TrainResult:
        self.calls += 1
        if self.client_id == 2 and self.calls == 1:
            Hangs.release.wait(4.0)
        return TrainResult([p + np.float32(0.01) for p in params], steps=1, loss=0.0, num_examples=10)


def test_a_hung_node_frees_its_slot_at_its_deadline_and_the_run_completes(tmp_path: Path) -> None:
    Hangs.release.clear()
    raw = with_async({**RAW, "rounds": 2, "evaluation": {"centralized": False}})
    out = run_with_clients(raw, tmp_path, lambda exp, cid: Hangs(cid), Hangs.release, round_deadline_s=1.5)
    recs = out.history.rounds
    assert [r.round for r in recs] == [1, 2]
    # The buffer needs all three: step 1 waited for client 2's slot to be freed at each deadline it
    # missed (its node is busy for 4 s) and for a dispatch it answered, at version 0, in the step.
    missed = recs[0].dropped.pop("fit: missed the 1.5s round deadline")
    assert missed and set(missed) == {2} and not recs[0].dropped
    assert sorted(recs[0].extra["applied_clients"]) == [0, 1, 2] and recs[0].extra["staleness_max"] == 0
    assert sorted(recs[1].extra["applied_clients"]) == [0, 1, 2] and not recs[1].dropped


ASYNC_TOML = """
[async]
enabled = true
buffer_size = 3
concurrency = 3
"""


def records(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [json.loads(r) for (r,) in con.execute("SELECT record FROM rounds ORDER BY round").fetchall()]


def test_a_server_killed_mid_run_resumes_at_its_exact_version_and_step_count(
    tmp_path: Path, make_keys: Any, write_experiment: Any
) -> None:
    keys, allow = make_keys(3)
    port = free_port()
    # Enough local work that a step takes a while: the kill must land between checkpoints, not after the last.
    exp_path = write_experiment(
        allow=allow,
        clients=3,
        rounds=6,
        port=port,
        epochs=40,
        deploy_extra="examples_cap = 0.0\nnorm_cap = 0.0\n",  # the simulation has no influence bounds
    )
    # Over gRPC a node waits in the open buffer until it is applied, so with K = C = the cohort each step is
    # a synchronous round (the simulation's virtual clock redispatches early finishers when durations differ).
    reference = execute(build(load(str(exp_path))))
    exp_path.write_text(exp_path.read_text() + ASYNC_TOML)
    db, out = tmp_path / "state.db", tmp_path / "out"
    join = ["join", "--insecure", "--give-up", "60", "--server", f"127.0.0.1:{port}", "--state-dir", str(tmp_path)]
    with processes() as procs:
        first = spawn(procs, ["serve", str(exp_path)], tmp_path / "server1.log")
        nodes = [
            spawn(procs, [*join, "--key", str(k), "--partition", str(i)], tmp_path / f"node{i}.log")
            for i, k in enumerate(keys)
        ]
        wait_for(lambda: last_round(db) >= 2, 90, "two steps")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        killed_at = last_round(db)
        assert killed_at < 6, "the run must be interrupted, not finished"
        second = spawn(procs, ["serve", str(exp_path), "--resume", "-o", str(out)], tmp_path / "server2.log")
        assert second.wait(120) == 0, (tmp_path / "server2.log").read_text()[-2000:]
        assert all(n.wait(30) == 0 for n in nodes)
    recs = records(db)
    assert [r["round"] for r in recs] == [1, 2, 3, 4, 5, 6]
    assert [r["extra"]["version"] for r in recs] == [1, 2, 3, 4, 5, 6]
    assert [r["extra"]["updates_applied_total"] for r in recs] == [3, 6, 9, 12, 15, 18]
    assert "event=listening" in (tmp_path / "server2.log").read_text()
    assert f"from_round={killed_at}" in (tmp_path / "server2.log").read_text()
    # The buffer open at the kill is discarded; its nodes retrain at the same dispatch number, so the
    # resumed run ends with the uninterrupted run's model.
    assert_same_model(load_params_npz(out / "model.npz"), reference.state.params)


def test_secure_aggregation_per_buffer_over_grpc_equals_the_simulation(tmp_path: Path, make_keys: Any) -> None:
    keys, allow = make_keys(3)
    raw = {**with_async(RAW, staleness="polynomial"), "secagg": {"enabled": True}}
    sim = execute(build(from_dict(raw)))
    out = served(raw, tmp_path, keys, allow, secagg_stage_s=20.0)
    recs = out.history.rounds
    assert [r.participants for r in recs] == [3, 3, 3]
    assert all(sorted(r.extra["applied_clients"]) == [0, 1, 2] for r in recs)
    # Both sides sum the same fixed-point words exactly; only float32 rounding of the decoded sum differs.
    assert_same_model(out.result.state.params, sim.state.params)


def test_central_dp_per_applied_step_over_grpc_spends_the_simulations_epsilon(tmp_path: Path, make_keys: Any) -> None:
    keys, allow = make_keys(3)
    raw = {
        **with_async(RAW),
        "strategy": {"name": "fedavg", "weighting": "uniform"},
        "privacy": {"mode": "central", "clip_norm": 0.5, "noise_multiplier": 1.1, "sampling": "none"},
    }
    out = served(raw, tmp_path, keys, allow)
    sim = simulated_with_noise_key(from_dict(raw), served_noise_key(out))
    want = [r.extra["epsilon"] for r in sim.history]
    assert len(set(want)) == 3  # ε grows with every applied step
    assert [r.extra["epsilon"] for r in out.history.rounds] == pytest.approx(want, rel=1e-9)
    assert_same_model(out.result.state.params, sim.state.params)


def test_secure_buffers_over_grpc_apply_the_staleness_weights_the_nodes_were_sent(tmp_path: Path) -> None:
    """Fast and slow nodes under secure aggregation: every step is the staleness-weighted mean by hand.

    The server sees only each buffer's masked sum, so the weights ``s(τ)`` can only be in it
    because each node scaled its own input by the weight the session sent it."""
    Paced.fast_done = 0
    Paced.release.clear()
    raw = {
        **with_async({**RAW, "rounds": 6, "evaluation": {"centralized": False}}, buffer_size=2),
        "secagg": {"enabled": True},
    }
    initial = build(from_dict(raw)).initial
    out = run_with_clients(raw, tmp_path, lambda exp, cid: Paced(cid), Paced.release, secagg_stage_s=20.0)
    recs = out.history.rounds
    assert [r.round for r in recs] == list(range(1, 7))
    assert max(r.extra["staleness_max"] for r in recs) >= 4  # the slow node's update was stale
    want = [np.asarray(p, dtype=np.float64) for p in initial]
    for r in recs:
        s = [(1.0 + tau) ** -0.5 for tau in r.extra["applied_staleness"]]
        w = [10.0 * (cid + 1) for cid in r.extra["applied_clients"]]
        d = [0.01 * (cid + 1) for cid in r.extra["applied_clients"]]
        total = sum(si * wi for si, wi in zip(s, w, strict=True))
        mean = sum(si * wi * di for si, wi, di in zip(s, w, d, strict=True)) / total
        want = [p + mean for p in want]
    assert_same_model(out.result.state.params, want, atol=1e-4)


def test_influence_bounds_of_a_whole_cohort_buffer_are_the_synchronous_served_rounds(
    tmp_path: Path, make_keys: Any
) -> None:
    """With the deployment's weight cap and norm clip binding, a buffer bounds its updates as a served
    synchronous round does: the first buffer's arrivals wait for a full window, whatever their order."""
    raw = {
        **RAW,
        "seed": 3,
        "data": {"dataset": "synthetic", "num_clients": 3},
        "training": {"clients_per_round": 3, "local_epochs": 40},
    }
    caps = {"examples_cap": 10.0, "norm_cap": 3.0}
    keys, allow = make_keys(3)
    sync = served(raw, tmp_path / "sync", keys, allow, **caps)
    buffered = served(with_async(raw), tmp_path / "async", keys, allow, **caps)
    assert any(r.extra.get("influence_clipped_updates", 0) >= 1 for r in sync.history.rounds)  # the bounds bind
    assert all(r.extra.get("influence_capped_updates", 0) >= 1 for r in sync.history.rounds)
    for a, b in zip(sync.history.rounds, buffered.history.rounds, strict=True):
        assert {k: v for k, v in a.extra.items() if k.startswith("influence")} == {
            k: v for k, v in b.extra.items() if k.startswith("influence")
        }
    # A served step reports the median of the nodes' losses, as a served round does (not a mean one node sets).
    assert [r.train_loss for r in buffered.history] == [r.train_loss for r in sync.history]
    assert all("client_reported_train_loss_median" in r.extra for r in buffered.history)
    assert_same_model(buffered.result.state.params, sync.result.state.params, atol=0)


class Vanishes:
    """Client 2's node disconnects in the middle of its first training and never comes back; clients 0
    and 1 train at once, except that their second training waits until the server sees client 2 gone."""

    node: Any = None
    service: Any = None
    release = threading.Event()

    def __init__(self, cid: int) -> None:
        self.client_id, self.calls = cid, 0

    def train(self, params: Any, cfg: Any, ctx: Any) -> TrainResult:
        self.calls += 1
        if self.client_id == 2:
            Vanishes.node.stop()  # its Subscribe stream is cancelled: the node is gone
            Vanishes.release.wait(60)
        elif self.calls == 2:
            end = time.monotonic() + 30
            while Vanishes.service.is_connected(2) and time.monotonic() < end:
                time.sleep(0.05)
        step = np.float32(0.01 * (self.client_id + 1))
        return TrainResult([p + step for p in params], steps=1, loss=0.0, num_examples=10)


def test_a_node_that_disconnects_mid_training_frees_its_slot_and_the_run_completes(tmp_path: Path) -> None:
    from fedge.deploy.server import serve

    Vanishes.release.clear()
    keys, allow = make_keys_for(tmp_path)
    raw = with_async({**RAW, "rounds": 4, "evaluation": {"centralized": False}}, buffer_size=2)
    exp = from_dict({**raw, "deploy": {**bare_deploy(tmp_path, allow, 3), "node_timeout_s": 1.0}})
    ready, out = threading.Event(), {}
    ports: list[int] = []

    def hook(transport: Any) -> None:
        Vanishes.service = transport.service

    def main() -> None:
        out["served"] = serve(exp, on_ready=lambda p: (ports.append(p), ready.set()), transport_hook=hook)

    t = threading.Thread(target=main)
    t.start()
    try:
        assert ready.wait(30)
        for i in range(3):
            node, _ = start_node(ports[0], keys[i], lambda e, cid: Vanishes(cid), i, state_dir=tmp_path / f"n{i}")
            if i == 2:
                Vanishes.node = node
        t.join(90)
    finally:
        Vanishes.release.set()
        stop_nodes()
    recs = out["served"].history.rounds
    assert [r.round for r in recs] == [1, 2, 3, 4]
    lost = [r for r in recs if r.dropped.get("fit: node disconnected") == [2]]
    assert len(lost) == 1 and not any(2 in r.extra["applied_clients"] for r in recs)
    assert all(sorted(r.extra["applied_clients"]) == [0, 1] for r in recs)
