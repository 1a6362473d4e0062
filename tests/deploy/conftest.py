"""Helpers of the deployment tests: node keys, TLS certificates, experiment files, free ports."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedge.deploy.auth import new_keys

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
"""


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
        allow: Path,
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
                allow=allow,
                strategy=strategy,
                model=model,
                epochs=epochs,
                dataset=dataset,
            )
        )
        return path

    return write


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1/localhost and a node certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("fedge test CA", ca_key, "fedge test CA", ca_key, ca=True)
    out: dict[str, Path] = {}
    d = tmp_path / "tls"
    d.mkdir()
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out["ca"] = d / "ca.pem"
    for who in ("server", "node"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"fedge {who}", key, "fedge test CA", ca_key, ca=False)
        (d / f"{who}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{who}.key").write_bytes(_pem_key(key))
        out[who], out[f"{who}_key"] = d / f"{who}.pem", d / f"{who}.key"
    return out
