"""Secure aggregation over gRPC: real node processes run the protocol's client stages.

A real server process and three ``fedge join`` nodes end with the in-process simulated
secure run's final model; and, with the server in this process so its received bytes can
be inspected, a node killed with SIGKILL after sharing its keys is unmasked as a dropout
while the run carries on, and nothing a node sends contains its plain update.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.clients.base import run_fit
from fedge.config import load
from fedge.core.types import ClientContext, client_rng
from fedge.deploy.node import SECAGG_STATE, partition_client
from fedge.deploy.proto import pb
from fedge.deploy.server import serve
from fedge.experiment import load_params_npz
from fedge.federation import build, execute
from fedge.pipeline import Pipeline
from fedge.secagg import server as S
from fedge.secagg.client import STATE_KEY

from .conftest import free_port
from .test_integration import processes, spawn

pytestmark = pytest.mark.integration


def secagg_experiment(write_experiment: Any, allow: Path, clients: int, port: int) -> Path:
    path: Path = write_experiment(allow=allow, clients=clients, rounds=2, port=port, timeout=2.0)
    path.write_text(path.read_text() + "secagg_stage_s = 20\n\n[secagg]\nenabled = true\n")
    return path


def join(procs: list[subprocess.Popen[bytes]], tmp_path: Path, port: int, keys: list[Path]) -> list[Any]:
    return [
        spawn(
            procs,
            [
                "join",
                "--server",
                f"127.0.0.1:{port}",
                "--key",
                str(k),
                "--partition",
                str(i),
                "--state-dir",
                str(tmp_path / "nodes"),
                "--give-up",
                "30",
                "--insecure",
            ],
            tmp_path / f"node{i}.log",
        )
        for i, k in enumerate(keys)
    ]


def test_three_nodes_run_secure_aggregation_to_the_simulated_secure_model(
    tmp_path: Path, make_keys: Any, write_experiment: Any
) -> None:
    keys, allow = make_keys(3)
    port = free_port()
    exp_path = secagg_experiment(write_experiment, allow, 3, port)
    reference = execute(build(load(str(exp_path))))
    assert all("skipped" not in r.extra for r in reference.history.rounds)
    out = tmp_path / "out"
    with processes() as procs:
        server = spawn(procs, ["serve", str(exp_path), "-o", str(out)], tmp_path / "server.log")
        nodes = join(procs, tmp_path, port, keys)
        assert server.wait(60) == 0, (tmp_path / "server.log").read_text()[-3000:]
        assert all(n.wait(20) == 0 for n in nodes)
    log = (tmp_path / "server.log").read_text()
    assert log.count("event=secagg_done") == 2 and "stage=unmask" in log
    for i in range(3):
        assert "event=secagg round=2 stage=unmask accepted=True" in (tmp_path / f"node{i}.log").read_text()
    # Both sides sum the same fixed-point words exactly; only float32 rounding of the decoded sum differs.
    for a, b in zip(load_params_npz(out / "model.npz"), reference.state.params, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def client_update(exp_path: Path, cid: int, secure: bool, kept: dict[str, Any] | None = None) -> Any:
    """Client ``cid``'s round-1 update as its node computes it, with or without secagg
    (``kept`` receives the client's own state: with secagg, its input words)."""
    exp = load(str(exp_path))
    built = build(exp)
    state = built.strategy.init(built.initial, num_clients=exp.data.num_clients)
    ins = built.strategy.configure(state, 1, built.train)
    ctx = ClientContext(
        client_id=cid, round_num=1, rng=client_rng(exp.seed, 1, cid), state={} if kept is None else kept
    )
    params = [np.asarray(p, dtype=np.float32) for p in state.params]
    return run_fit(
        partition_client(exp, cid),
        params,
        ins,
        ctx,
        strategy=built.strategy,
        pipeline=built.pipeline if secure else Pipeline(),
    )


def test_a_node_killed_mid_protocol_is_unmasked_as_a_dropout_and_no_plain_update_reaches_the_server(
    tmp_path: Path, make_keys: Any, write_experiment: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SECAGG_STATE == STATE_KEY
    unmask = S.unmask
    keys, allow = make_keys(4)
    port = free_port()
    exp_path = secagg_experiment(write_experiment, allow, 4, port)
    received: list[bytes] = []
    totals: dict[int, Any] = {}
    victim = 3
    with processes() as procs:
        nodes: list[Any] = []

        def hook(transport: Any) -> None:
            from fedge.deploy.service import PushIn

            svc = transport.service
            push_open, add, post = svc.push_open, PushIn.add, svc.secagg_post

            def recording_open(first: bytes, md: Any) -> Any:
                received.append(first)  # a Push's header (a small update's chunk rides inside it)
                return push_open(first, md)

            def recording_add(self: Any, raw: bytes, held: Any) -> None:
                received.append(raw)  # each further chunk of a Push
                add(self, raw, held)

            def recording_post(raw: bytes, md: Any, more: Any = ()) -> bytes:
                more = list(more)
                received.extend([raw, *more])
                reply = post(raw, md, more)
                msg = pb.SecAggPost.FromString(raw)
                node = md.node_id  # the Caller the gRPC gate authenticated
                if (msg.round, msg.stage) == (1, "share") and svc._nodes[node].client_id == victim:
                    os.kill(nodes[victim].pid, signal.SIGKILL)  # it has shared its keys, now it vanishes
                return reply  # type: ignore[no-any-return]

            def capturing(setup: Any, roster: Any, shared: Any, summed: Any, responses: Any) -> Any:
                total = unmask(setup, roster, shared, summed, responses)
                totals[setup.round_num] = (total.copy(), tuple(sorted(summed.survivors)))
                return total

            svc.push_open, svc.secagg_post = recording_open, recording_post
            monkeypatch.setattr(PushIn, "add", recording_add)
            monkeypatch.setattr(S, "unmask", capturing)

        ready = threading.Event()
        result: dict[str, Any] = {}

        def run_server() -> None:
            try:
                result["served"] = serve(
                    load(str(exp_path)), on_ready=lambda _: ready.set(), transport_hook=hook, linger_s=1.0
                )
            except BaseException as exc:  # reported by the assertion below
                result["error"] = exc
                ready.set()

        thread = threading.Thread(target=run_server, daemon=True)
        thread.start()
        assert ready.wait(30)
        nodes.extend(join(procs, tmp_path, port, keys))
        thread.join(60)
        assert not thread.is_alive() and "error" not in result, result.get("error")
        assert nodes[victim].wait(5) == -signal.SIGKILL
    records = result["served"].history.rounds
    assert [r.round for r in records] == [1, 2]
    first, second = records
    assert "skipped" not in first.extra and "skipped" not in second.extra
    assert first.participants == 3 and first.dropped.get("secagg masked_input: node disconnected") == [victim]
    assert second.participants == 3
    # The round-1 total is exactly the survivors' words, as this test recomputes them ...
    kept: dict[int, dict[str, Any]] = {cid: {} for cid in range(4)}
    for cid in range(4):
        assert "secagg_words" not in client_update(exp_path, cid, secure=True, kept=kept[cid]).payload
    words = {cid: kept[cid][STATE_KEY]["words"] for cid in range(4)}
    total, included = totals[1]
    assert included == (0, 1, 2)
    expected = sum((words[c].astype(np.uint64) for c in included), np.zeros_like(total, np.uint64))
    np.testing.assert_array_equal(total, (expected % 2**32).astype(np.uint32))
    # ... and neither those words nor the plain float32 deltas were ever sent to the server.
    blob = b"".join(received)
    for cid in range(4):
        plain = np.concatenate([d.ravel() for d in client_update(exp_path, cid, secure=False).delta])
        for secret in (plain.astype(np.float32).tobytes(), words[cid].tobytes()):
            assert len(secret) >= 64
            windows = [secret[i : i + 16] for i in range(0, len(secret) - 16, 16)]
            assert not any(w in blob for w in windows), f"client {cid}'s update reached the server"


def test_answers_larger_than_one_message_travel_in_parts_and_sum_exactly(
    tmp_path: Path, make_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With parts of 1 KiB every masked input is sent as a stream of parts, checked against the digest
    its signed first part names: no single gRPC message bounds the model secure aggregation can sum."""
    import fedge.deploy.node as node_module
    from fedge.config import from_dict

    from .conftest import bare_deploy
    from .test_transport import start_node, stop_nodes

    monkeypatch.setattr(node_module, "SECAGG_PART", 1024)
    keys, allow = make_keys(3)
    raw = {
        "seed": 4,
        "rounds": 2,
        "data": {"dataset": "synthetic", "num_clients": 3},
        "model": {"name": "logreg", "framework": "numpy"},
        "training": {"clients_per_round": 3, "local_epochs": 1},
        "evaluation": {"centralized": False},
        "secagg": {"enabled": True},
    }
    reference = execute(build(from_dict(raw)))
    parts: list[int] = []

    def hook(transport: Any) -> None:
        svc = transport.service
        original = svc.secagg_post

        def counting(raw: bytes, md: Any, more: Any = ()) -> bytes:
            more = list(more)
            parts.append(1 + len(more))
            return original(raw, md, more)

        svc.secagg_post = counting

    exp = from_dict({**raw, "deploy": {**bare_deploy(tmp_path, allow, 3), "secagg_stage_s": 20}})
    from fedge.deploy import server as server_module

    ports: list[int] = []
    ready = threading.Event()
    out: dict[str, Any] = {}

    def main() -> None:
        out["served"] = server_module.serve(
            exp, on_ready=lambda p: (ports.append(p), ready.set()), transport_hook=hook, linger_s=0.5
        )

    t = threading.Thread(target=main)
    t.start()
    assert ready.wait(30)
    for i in range(3):
        start_node(ports[0], keys[i], None, i)
    t.join(90)
    stop_nodes()
    served = out["served"]
    assert [r.participants for r in served.history] == [3, 3]
    assert max(parts) > 1  # the masked inputs really went in parts
    for a, b in zip(served.result.state.params, reference.state.params, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
