"""The ``[deploy]`` section of an experiment file: how ``fedge serve`` runs the federation."""

from __future__ import annotations

from dataclasses import dataclass

from fedge.config import opt, register_section


@dataclass
class DeployConfig:
    host: str = opt("127.0.0.1", "address the server listens on ('0.0.0.0' = every interface)")
    port: int = opt(9091, "port the server listens on (0 = any free port)", min=0, max=65535)
    state: str = opt("fedge-state.db", "SQLite file of the run's state (config, nodes, rounds, checkpoint)")
    min_nodes: int = opt(1, "connected nodes the first round (also after a resume) waits for", min=1)
    round_min_nodes: int = opt(1, "connected nodes every later round waits for", min=1)
    wait_s: float = opt(300.0, "longest wait for min_nodes; then the run stops and says who is missing", min=0)
    round_deadline_s: float = opt(
        600.0, "a round closes after this long; missing updates count as failed", min=0, exclusive_min=True
    )
    heartbeat_s: float = opt(2.0, "how often nodes poll the server (also their heartbeat)", min=0, exclusive_min=True)
    node_timeout_s: float = opt(
        15.0, "a node silent this long is disconnected (its round work fails)", min=0, exclusive_min=True
    )
    chunk_kib: int = opt(2048, "tensor chunk size on the wire, KiB", min=1, max=8192)
    max_update_mib: float = opt(2048.0, "largest update a node may send, MiB", min=0, exclusive_min=True)
    allow_list: str = opt("", "file of allowed node public keys, one 'ed25519 <key> <name>' per line")
    revoked: str = opt("", "file of revoked node public keys (same format); refused even if allowed")
    window_s: float = opt(60.0, "accepted clock skew of signed requests, seconds", min=0, exclusive_min=True)
    tls_cert: str = opt("", "PEM server certificate ('' = no TLS: loopback and tests only)")
    tls_key: str = opt("", "PEM private key of tls_cert")
    client_ca: str = opt("", "PEM CA that signs node certificates: turns on mutual TLS")
    workers: int = opt(32, "gRPC server threads", min=2)
    secagg_stage_s: float = opt(
        60.0,
        "with [secagg]: a protocol stage waits this long for the nodes' answers; missing nodes count as dropped",
        min=0,
        exclusive_min=True,
    )
    max_decoding: int = opt(4, "updates decoded at once (bounds server memory)", min=1)


register_section("deploy", DeployConfig)
