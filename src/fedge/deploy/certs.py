"""TLS certificates for a deployment: a private CA, a server certificate, node certificates.

:func:`new_certs` (``fedge certs new``) writes, with ``cryptography``'s X.509 builder and
ECDSA P-256 keys:

* ``ca.pem`` / ``ca.key`` — the CA; nodes and ``fedge status`` trust it with ``--ca``;
  ``fedge serve --client-ca ca.pem`` makes the server require node certificates it signed;
* ``server.pem`` / ``server.key`` — ``fedge serve --tls-cert/--tls-key``, valid for every
  given host name and IP address (subject alternative names);
* ``NAME.pem`` / ``NAME.key`` per client name — ``fedge join --cert/--cert-key`` (mutual TLS).

Keys are written with mode 0600 and no existing file is ever overwritten: every target is
checked before anything is written.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedge.core.errors import ConfigError


@dataclass(frozen=True)
class CertFiles:
    """The paths :func:`new_certs` wrote."""

    ca: Path
    ca_key: Path
    server: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _sign(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    ca: bool = False,
    hosts: Sequence[str] = (),
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    with open(path, "xb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def new_certs(out: Path, hosts: Sequence[str], clients: Sequence[str] = (), *, days: int = 365) -> CertFiles:
    """Write a CA, a server certificate for ``hosts`` and one certificate per client name into ``out``.

    Raises :class:`ConfigError` before writing anything when ``hosts`` is empty, a name is
    repeated or not a plain file name, or any target file already exists.
    """
    if not hosts:
        raise ConfigError("certs: give at least one --host (a name or IP address nodes use to reach the server)")
    if days < 1:
        raise ConfigError(f"certs: --days must be >= 1, got {days}")
    bad = [c for c in clients if not c or Path(c).name != c or c in ("ca", "server")]
    if bad:
        raise ConfigError(f"certs: client name {bad[0]!r} must be a plain file name other than 'ca' and 'server'")
    if len(set(clients)) != len(clients):
        raise ConfigError("certs: a --client name is given twice")
    names = ["ca", "server", *clients]
    targets = [out / f"{n}{ext}" for n in names for ext in (".pem", ".key")]
    existing = [p for p in targets if p.exists()]
    if existing:
        raise ConfigError(f"{existing[0]} exists; choose another --out folder (nothing was written)")
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fedge CA")
    ca = _sign("fedge CA", ca_key, issuer=ca_name, issuer_key=ca_key, days=days, ca=True)
    _write_cert(out / "ca.pem", ca)
    _write_private(out / "ca.key", ca_key)
    pairs: dict[str, tuple[Path, Path]] = {}
    for name in ["server", *clients]:
        key = ec.generate_private_key(ec.SECP256R1())
        is_server = name == "server"
        cert = _sign(
            f"fedge {name}",
            key,
            issuer=ca_name,
            issuer_key=ca_key,
            days=days,
            hosts=hosts if is_server else (),
            usage=ExtendedKeyUsageOID.SERVER_AUTH if is_server else ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        _write_cert(out / f"{name}.pem", cert)
        _write_private(out / f"{name}.key", key)
        pairs[name] = (out / f"{name}.pem", out / f"{name}.key")
    server = pairs.pop("server")
    return CertFiles(out / "ca.pem", out / "ca.key", server[0], server[1], pairs)
