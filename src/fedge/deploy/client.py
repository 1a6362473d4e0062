"""Read a running server's status from Python (``fedge status``, dashboards).

A failed call is explained in one line: nothing listening at HOST:PORT, a TLS server
asked without ``--ca`` ("the server uses TLS: pass --ca FILE"), a plaintext server asked
with ``--ca``, or a TLS handshake that failed (wrong CA, missing client certificate).
Which of these it is, :func:`speaks_tls` finds out with a TLS handshake of its own that
verifies nothing: a server that answers it, or refuses it with a TLS alert, speaks TLS.
Plaintext is used only when asked for (``insecure=True``, ``fedge status --insecure``);
without ``--ca`` or ``--insecure`` the same probe names the option the server needs.
"""

from __future__ import annotations

import socket
import ssl

import grpc

from fedge.core.errors import ConfigError, TransportError
from fedge.deploy import wire
from fedge.deploy.proto import pb
from fedge.deploy.service import ServerStatus


def split_address(server: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as a host and a port; a one-line error otherwise."""
    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--server {server!r}: expected HOST:PORT, e.g. 127.0.0.1:9091")
    return host.strip("[]"), int(port)


def speaks_tls(server: str, timeout: float = 3.0) -> bool | None:
    """Whether the server at ``HOST:PORT`` answers a TLS handshake; None when nothing accepts a connection."""
    host, port = split_address(server)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        with ctx.wrap_socket(sock, server_hostname=host):
            return True
    except ssl.SSLError as exc:
        return "ALERT" in str(exc.reason or "").upper()
    except OSError:
        return False
    finally:
        sock.close()


def explain(server: str, exc: grpc.RpcError, *, tls: bool) -> str:
    """One line saying why the call to ``server`` failed."""
    code: grpc.StatusCode = exc.code()
    if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return f"status of {server}: {code.name}: {exc.details()}"
    answers = speaks_tls(server)
    if answers is None:
        return f"status of {server}: nothing is listening at {server} (is `fedge serve` running there?)"
    if answers and not tls:
        return f"status of {server}: the server uses TLS: pass --ca FILE"
    if tls and not answers:
        return f"status of {server}: the server does not use TLS: drop --ca"
    if tls:
        return (
            f"status of {server}: the TLS handshake failed: is --ca the CA of the server's certificate, "
            "is the host name in it, and does the server want a client certificate (--cert/--cert-key)?"
        )
    return f"status of {server}: no fedge server answers at {server} ({code.name})"


def _needs_option(server: str) -> str:
    """Why a status call without ``--ca`` or ``--insecure`` is not made, naming the option to add."""
    answers = speaks_tls(server)
    if answers is None:
        return f"status of {server}: nothing is listening at {server} (is `fedge serve` running there?)"
    if answers:
        return f"status of {server}: the server uses TLS: pass --ca FILE"
    return f"status of {server}: the server speaks plaintext: pass --insecure to read its status anyway"


def fetch_status(
    server: str,
    *,
    root_ca: bytes | None = None,
    cert_chain: tuple[bytes, bytes] | None = None,
    timeout: float = 10.0,
    insecure: bool = False,
) -> ServerStatus:
    """The :class:`ServerStatus` snapshot of the server at ``HOST:PORT``.

    ``root_ca`` turns on TLS; ``cert_chain`` is ``(key PEM, certificate PEM)`` for mutual TLS;
    plaintext needs ``insecure=True``.
    """
    split_address(server)
    if root_ca is None and not insecure:
        raise TransportError(_needs_option(server))
    if root_ca is not None:
        key, cert = cert_chain if cert_chain else (None, None)
        channel = grpc.secure_channel(server, grpc.ssl_channel_credentials(root_ca, key, cert))
    elif cert_chain is not None:
        raise ConfigError("a client certificate needs --ca too")
    else:
        channel = grpc.insecure_channel(server)
    try:
        stub = channel.unary_unary("/fedge.deploy.Fedge/Status")
        raw = stub(pb.StatusRequest().SerializeToString(), timeout=timeout)
    except grpc.RpcError as exc:
        raise TransportError(explain(server, exc, tls=root_ca is not None)) from None
    finally:
        channel.close()
    return ServerStatus.from_json(wire.parse(pb.StatusReply, raw).json)
