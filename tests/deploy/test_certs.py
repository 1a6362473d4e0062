"""``fedge certs new``: a CA, a server certificate for the given hosts, node certificates."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509

from fedge.cli.main import cli


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when ``ca`` issued ``cert`` (the signature is checked; a bad one raises)."""
    cert.verify_directly_issued_by(ca)
    return cert.issuer == ca.subject


def test_certs_new_writes_a_ca_a_server_cert_for_every_host_and_client_certs(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    args = ["certs", "new", "--out", str(out), "--host", "127.0.0.1", "--host", "depot.local", "--client", "pi-1"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "ca.key",
        "ca.pem",
        "pi-1.key",
        "pi-1.pem",
        "server.key",
        "server.pem",
    ]
    for key in ("ca.key", "server.key", "pi-1.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600
    ca, server, node = (_load(out / n) for n in ("ca.pem", "server.pem", "pi-1.pem"))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert _signed_by(server, ca) and _signed_by(node, ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["depot.local"]


def test_certs_new_never_overwrites_and_writes_nothing_when_one_file_exists(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    out.mkdir()
    (out / "server.key").write_text("the user's own key")
    res = CliRunner().invoke(cli, ["certs", "new", "--out", str(out), "--host", "127.0.0.1"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        f"error: {out / 'server.key'} exists; choose another --out folder (nothing was written)"
    ]
    assert [p.name for p in out.iterdir()] == ["server.key"]
    assert (out / "server.key").read_text() == "the user's own key"


def test_certs_new_needs_a_host() -> None:
    res = CliRunner().invoke(cli, ["certs", "new", "--out", "unused"])
    assert res.exit_code == 2 and "--host" in res.output
