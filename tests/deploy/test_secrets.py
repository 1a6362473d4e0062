"""Nothing secret leaves the server: the JoinReply a real node receives and the state database.

A real TLS gRPC server over loopback, run with a dashboard token, a tracking URI with
credentials, TLS and allow-list files, an output folder and server data paths; a real node
joins (its raw JoinReply bytes are kept) and trains one round.
"""

from __future__ import annotations

import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from fedge.config.schema import Experiment, from_dict
from fedge.deploy import wire
from fedge.deploy.auth import Signer, load_private, new_keys
from fedge.deploy.node import Backoff, Node
from fedge.deploy.proto import pb
from fedge.deploy.server import serve

pytestmark = pytest.mark.integration

TOKEN = "dash-T0KEN-never-sent"
PASSWORD = "tr4ck-PASSWORD"
TRACKING = f"https://alice-user:{PASSWORD}@mlflow.example.com:5000/api?auth={PASSWORD}"


def test_join_reply_and_state_database_hold_no_secret_and_no_server_path(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    key = new_keys(tmp_path / "keys", "n0")[0]
    allow = tmp_path / "allow-list-file.txt"
    allow.write_text(key.with_suffix(".pub").read_text())
    state = tmp_path / "server-state" / "state.db"
    output = tmp_path / "server-output-folder" / "{dataset}"
    data_path = tmp_path / "server-data" / "pooled.csv"
    exp = from_dict(
        {
            "seed": 2,
            "rounds": 1,
            "output": str(output),
            "data": {"dataset": "synthetic", "num_clients": 1, "path": str(data_path)},
            "model": {"name": "logreg", "framework": "numpy"},
            "training": {"clients_per_round": 1, "local_epochs": 1},
            "deploy": {
                "port": 0,
                "state": str(state),
                "heartbeat_s": 0.2,
                "allow_list": str(allow),
                "tls_cert": str(certs["server"]),
                "tls_key": str(certs["server_key"]),
                "wait_s": 60,
                "round_deadline_s": 60,
            },
            "dashboard": {"token": TOKEN},
            "tracking": {"mlflow_uri": TRACKING},
        }
    )
    ready = threading.Event()
    ports: list[int] = []
    done: list[Any] = []
    modes: dict[str, int] = {}

    def on_ready(port: int) -> None:
        for f in state.parent.iterdir():  # the database and SQLite's -wal/-shm files, while it serves
            modes[f.name] = stat.S_IMODE(f.stat().st_mode)
        ports.append(port)
        ready.set()

    server = threading.Thread(target=lambda: done.append(serve(exp, on_ready=on_ready, linger_s=0.5)))
    server.start()
    try:
        assert ready.wait(60)
        node = Node(
            f"127.0.0.1:{ports[0]}",
            Signer(load_private(key)),
            partition=0,
            root_ca=certs["ca"].read_bytes(),
            backoff=Backoff(give_up_s=20),
        )
        raw = node._unary("Join", pb.JoinRequest(partition=0))
        assert node.run() == 1
    finally:
        server.join(60)
    assert done and len(done[0].history) == 1
    reply = wire.parse(pb.JoinReply, raw)
    assert "[model]" in reply.config_toml and "logreg" in reply.config_toml
    server_only = [
        TOKEN,
        PASSWORD,
        "alice-user",
        "mlflow.example.com",
        str(tmp_path),  # every server file: TLS key and certificate, allow-list, state, output, data
        "server-output-folder",
        "server-data",
        "allow-list-file",
        "server.key",
        "[deploy]",
        "[dashboard]",
        "[tracking]",
    ]
    leaked = [s for s in server_only if s.encode() in raw]
    assert leaked == [], reply.config_toml

    assert modes == {"state.db": 0o600, "state.db-wal": 0o600, "state.db-shm": 0o600}, modes
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    stored = b"".join(f.read_bytes() for f in state.parent.iterdir())
    for secret in (TOKEN, PASSWORD, "alice-user"):
        assert secret.encode() not in stored, secret
    assert b"https://mlflow.example.com:5000/api" in stored  # the URI itself is kept, without credentials


def test_public_uri_keeps_the_address_and_drops_credentials() -> None:
    from fedge.report.config import public_uri

    assert public_uri(TRACKING) == "https://mlflow.example.com:5000/api"
    assert public_uri("file:///srv/mlruns") == "file:///srv/mlruns"
    assert public_uri("./mlruns") == "./mlruns"
    assert public_uri("") == ""


def test_a_run_folders_config_keeps_no_token_or_tracking_credentials(tmp_path: Path) -> None:
    from fedge.config.overrides import apply_overrides
    from fedge.experiment import run_experiment

    exp = apply_overrides(
        Experiment(),
        [
            "rounds=1",
            "data.num_clients=4",
            "training.clients_per_round=2",
            "dashboard.token='tok-do-not-keep'",
            "tracking.mlflow_uri='https://ann:pw-do-not-keep@mlflow.example/'",
        ],
    )
    _, out = run_experiment(exp, output=str(tmp_path / "run"))
    kept = (out / "config.toml").read_text()
    assert "do-not-keep" not in kept and "mlflow.example" in kept
