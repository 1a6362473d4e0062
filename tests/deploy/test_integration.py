"""A real server process and real node processes on 127.0.0.1.

One federation of 10 nodes over TLS, with a node killed mid-run and forged, replayed,
revoked and malformed requests refused while the federation carries on; and a server
killed with SIGKILL, resumed from SQLite, ending with the simulation's final model.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from click.testing import CliRunner

from fedge.cli.main import cli
from fedge.config import load
from fedge.deploy.auth import Signer, load_private, new_keys
from fedge.deploy.client import fetch_status
from fedge.deploy.proto import pb
from fedge.deploy.service import ServerStatus
from fedge.experiment import load_params_npz
from fedge.federation import build, execute

from .conftest import FEDGE, free_port

pytestmark = pytest.mark.integration


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def spawn(procs: list[subprocess.Popen[bytes]], args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        p = subprocess.Popen([*FEDGE, *args], stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)
    procs.append(p)
    return p


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with suppress(Exception):
            if value := pred():
                return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def call(channel: grpc.Channel, method: str, body: bytes, md: Any = None) -> Any:
    return channel.unary_unary(f"/fedge.deploy.Fedge/{method}")(body, metadata=md, timeout=10)


def refused(channel: grpc.Channel, method: str, body: bytes, md: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call(channel, method, body, md)
    return e.value.code(), e.value.details() or ""


def test_ten_nodes_over_tls_survive_a_killed_node_and_hostile_requests(
    tmp_path: Path, make_keys: Any, write_experiment: Any, certs: dict[str, Path]
) -> None:
    keys, allow = make_keys(10)
    tester, _ = new_keys(tmp_path / "keys", "tester")
    revoked_key, revoked_pub = new_keys(tmp_path / "keys", "revoked")
    stranger, _ = new_keys(tmp_path / "keys", "stranger")
    allow.write_text(allow.read_text() + (tmp_path / "keys" / "tester.pub").read_text() + revoked_pub.read_text())
    revoked = tmp_path / "revoked.txt"
    revoked.write_text(revoked_pub.read_text())
    port = free_port()
    exp = write_experiment(allow=allow, clients=10, rounds=3, port=port, timeout=2.0)
    out = tmp_path / "out"
    target = f"127.0.0.1:{port}"
    ca = certs["ca"].read_bytes()
    with processes() as procs:
        server = spawn(
            procs,
            [
                "serve",
                str(exp),
                "--tls-cert",
                str(certs["server"]),
                "--tls-key",
                str(certs["server_key"]),
                "--revoked",
                str(revoked),
                "-o",
                str(out),
            ],
            tmp_path / "server.log",
        )
        nodes = [
            spawn(
                procs,
                [
                    "join",
                    "--server",
                    target,
                    "--key",
                    str(k),
                    "--partition",
                    str(i),
                    "--ca",
                    str(certs["ca"]),
                    "--state-dir",
                    str(tmp_path / "nodes"),
                    "--give-up",
                    "60",
                ],
                tmp_path / f"node{i}.log",
            )
            for i, k in enumerate(keys)
        ]
        status: ServerStatus = wait_for(
            lambda: (s := fetch_status(target, root_ca=ca)).round >= 1 and s.phase == "training" and s, 90, "round 1"
        )
        assert status.connected == 10
        nodes[0].send_signal(signal.SIGKILL)
        shown = CliRunner().invoke(cli, ["status", "--server", target, "--ca", str(certs["ca"])])
        assert shown.exit_code == 0 and "of 10 nodes connected" in shown.output, shown.output

        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca))
        poll = pb.PollRequest(session="forged:session").SerializeToString()
        code, msg = refused(channel, "Poll", poll, Signer(load_private(stranger)).metadata("Poll", poll))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "allow-list" in msg
        code, msg = refused(channel, "Poll", poll, Signer(load_private(revoked_key)).metadata("Poll", poll))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in msg
        signer = Signer(load_private(tester))
        md = signer.metadata("Poll", poll)
        first = pb.PollReply.FromString(call(channel, "Poll", poll, md))
        assert first.action == pb.PollReply.REJOIN
        code, msg = refused(channel, "Poll", poll, md)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "replayed" in msg
        junk = b"\x0a\xff\xff\xff\xff\x0f garbage"
        code, msg = refused(channel, "Join", junk, signer.metadata("Join", junk))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed" in msg
        push = channel.stream_unary("/fedge.deploy.Fedge/Push")
        with pytest.raises(grpc.RpcError) as e:
            push(iter([junk, junk]), metadata=signer.metadata("Push", junk), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        channel.close()

        assert server.wait(120) == 0
        assert all(n.wait(30) == 0 for n in nodes[1:])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3]
    lost = [r for r in records if 0 in r["dropped"].get("fit: node disconnected", [])]
    assert lost, "the killed node's round should record it as disconnected"
    assert all(r["participants"] >= 9 for r in records)
    log = (tmp_path / "server.log").read_text()
    assert "event=refused" in log and "replayed" in log


def last_round(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        row = con.execute("SELECT round FROM checkpoint").fetchone()
    return 0 if row is None else int(row[0])


def test_a_server_killed_with_sigkill_resumes_to_the_uninterrupted_final_model(
    tmp_path: Path, make_keys: Any, write_experiment: Any
) -> None:
    keys, allow = make_keys(4)
    port = free_port()
    exp_path = write_experiment(
        allow=allow,
        clients=4,
        rounds=6,
        port=port,
        strategy="fedadam",
        model="mlp",
        epochs=3,
        deploy_extra="examples_cap = 0.0\nnorm_cap = 0.0\n",  # the simulation has no influence bounds
    )
    reference = execute(build(load(str(exp_path))))
    db, out = tmp_path / "state.db", tmp_path / "out"
    with processes() as procs:
        first = spawn(procs, ["serve", str(exp_path)], tmp_path / "server1.log")
        nodes = [
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
                    "60",
                    "--insecure",
                ],
                tmp_path / f"node{i}.log",
            )
            for i, k in enumerate(keys)
        ]
        killed_at = wait_for(lambda: last_round(db) >= 2 and last_round(db), 90, "two rounds")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert last_round(db) < 6, "the run must be interrupted, not finished"
        second = spawn(procs, ["serve", str(exp_path), "--resume", "-o", str(out)], tmp_path / "server2.log")
        assert second.wait(120) == 0, (tmp_path / "server2.log").read_text()[-2000:]
        assert all(n.wait(30) == 0 for n in nodes)
    assert killed_at >= 2
    assert "from_round=" in (tmp_path / "server2.log").read_text()
    resumed = load_params_npz(out / "model.npz")
    for a, b in zip(resumed, reference.state.params, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    with sqlite3.connect(db) as con:
        assert [r for (r,) in con.execute("SELECT round FROM rounds ORDER BY round")] == [1, 2, 3, 4, 5, 6]
