"""Helpers of the deployment tests: node keys, TLS certificates, experiment files, free ports."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedge.deploy.auth import new_keys
from fedge.deploy.certs import new_certs

FEDGE = [sys.executable, "-m", "fedge.cli.main"]

EXPERIMENT = """
seed = 3
rounds = {rounds}
[data]
dataset = "{dataset}"
num_clients = {clients}
[model]
name = "{model}"
framework = "numpy"
hidden = [16]
[strategy]
name = "{strategy}"
[training]
clients_per_round = {per_round}
local_epochs = {epochs}
[deploy]
host = "127.0.0.1"
port = {port}
state = "{state}"
min_nodes = {min_nodes}
heartbeat_s = 0.5
node_timeout_s = {timeout}
wait_s = 60
round_deadline_s = 60
allow_list = "{allow}"
insecure = true
"""


def bare_deploy(tmp_path: Path, allow: Path, nodes: int) -> dict[str, object]:
    """A ``[deploy]`` section for a served run compared with the simulation: loopback, plaintext,
    any free port, and no influence bounds (the simulation has none)."""
    return {
        "port": 0,
        "state": str(tmp_path / "run.db"),
        "min_nodes": nodes,
        "heartbeat_s": 0.2,
        "allow_list": str(allow),
        "insecure": True,
        "examples_cap": 0.0,
        "norm_cap": 0.0,
    }


def simulated_with_noise_key(exp: Any, key: int) -> Any:
    """The simulation of ``exp`` with central DP's noise drawn from a served run's secret ``key``
    (a served run never draws it from the seed its nodes know): what the served run must equal."""
    from fedge.federation import build, execute

    fed = build(exp)
    dps = fed.pipeline.named("central_dp")
    assert dps, "no central DP in this experiment"
    for dp in dps:
        dp.noise_key = key
    return execute(fed)


def served_noise_key(served: Any) -> int:
    """The secret a served run drew central DP's noise from."""
    (dp,) = served.built.pipeline.named("central_dp")
    assert isinstance(dp.noise_key, int)
    return dp.noise_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def make_keys(tmp_path: Path) -> Callable[[int], tuple[list[Path], Path]]:
    """``n`` node key pairs and an allow-list file holding their public keys."""

    def make(n: int, prefix: str = "n") -> tuple[list[Path], Path]:
        keys = [new_keys(tmp_path / "keys", f"{prefix}{i}")[0] for i in range(n)]
        allow = tmp_path / f"allow-{prefix}.txt"
        allow.write_text("".join(k.with_suffix(".pub").read_text() for k in keys))
        return keys, allow

    return make


@pytest.fixture
def write_experiment(tmp_path: Path) -> Callable[..., Path]:
    def write(
        *,
        allow: Path | None,
        clients: int = 4,
        rounds: int = 3,
        per_round: int = 0,
        port: int = 0,
        strategy: str = "fedavg",
        model: str = "logreg",
        epochs: int = 1,
        timeout: float = 3.0,
        min_nodes: int | None = None,
        name: str = "exp.toml",
        dataset: str = "synthetic",
        deploy_extra: str = "",
    ) -> Path:
        path = tmp_path / name
        path.write_text(
            EXPERIMENT.format(
                rounds=rounds,
                clients=clients,
                per_round=per_round or clients,
                port=port,
                state=tmp_path / "state.db",
                min_nodes=min_nodes or clients,
                timeout=timeout,
                allow=allow or "",
                strategy=strategy,
                model=model,
                epochs=epochs,
                dataset=dataset,
            )
            + deploy_extra
        )
        return path

    return write


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a node certificate (`fedge certs new`)."""
    files = new_certs(tmp_path / "tls", ["127.0.0.1", "localhost"], ["node"], days=1)
    node, node_key = files.clients["node"]
    return {
        "ca": files.ca,
        "server": files.server,
        "server_key": files.server_key,
        "node": node,
        "node_key": node_key,
    }
