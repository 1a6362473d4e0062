"""Read a running server's status from Python (``fedge status``, dashboards)."""

from __future__ import annotations

import grpc

from fedge.core.errors import TransportError
from fedge.deploy import wire
from fedge.deploy.proto import pb
from fedge.deploy.service import ServerStatus


def fetch_status(server: str, *, root_ca: bytes | None = None, timeout: float = 10.0) -> ServerStatus:
    """The :class:`ServerStatus` snapshot of the server at ``HOST:PORT``."""
    if root_ca is not None:
        channel = grpc.secure_channel(server, grpc.ssl_channel_credentials(root_ca))
    else:
        channel = grpc.insecure_channel(server)
    try:
        stub = channel.unary_unary("/fedge.deploy.Fedge/Status")
        raw = stub(pb.StatusRequest().SerializeToString(), timeout=timeout)
    except grpc.RpcError as exc:
        raise TransportError(f"status of {server}: {exc.code().name}: {exc.details()}") from None
    finally:
        channel.close()
    return ServerStatus.from_json(wire.parse(pb.StatusReply, raw).json)
