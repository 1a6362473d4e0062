"""The ``[deploy]`` section of an experiment file: how ``fedge serve`` runs the federation."""

from __future__ import annotations

from dataclasses import dataclass

from fedge.config import opt


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
    heartbeat_s: float = opt(
        2.0,
        "how often a node without a Subscribe stream polls; a stream is pinged every max(heartbeat_s, "
        "node_timeout_s / 3)",
        min=0,
        exclusive_min=True,
    )
    node_timeout_s: float = opt(
        15.0, "a node silent this long is disconnected (its round work fails)", min=0, exclusive_min=True
    )
    chunk_kib: int = opt(2048, "tensor chunk size on the wire, KiB", min=1, max=8192)
    max_update_mib: float = opt(2048.0, "largest update a node may send, MiB", min=0, exclusive_min=True)
    allow_list: str = opt("", "file of allowed node public keys, one 'ed25519 <key> <name>' per line")
    revoked: str = opt("", "file of revoked node public keys (same format); refused even if allowed")
    window_s: float = opt(60.0, "accepted clock skew of signed requests, seconds", min=0, exclusive_min=True)
    tls_cert: str = opt("", "PEM server certificate ('' = no TLS: refused unless insecure = true)")
    tls_key: str = opt("", "PEM private key of tls_cert")
    client_ca: str = opt("", "PEM CA that signs node certificates: turns on mutual TLS")
    workers: int = opt(
        8,
        "threads for the blocking part of calls (SQLite, decoding updates, status); connected nodes "
        "hold event-loop streams, not threads",
        min=2,
    )
    max_streams: int = opt(
        10000,
        "Push and Fetch streams in flight at once, all nodes together (one of each per node); "
        "more are refused and their nodes retry",
        min=1,
    )
    insecure: bool = opt(False, "serve plaintext without tls_cert/tls_key: loopback and tests only (--insecure)")
    call_deadline_s: float = opt(
        3600.0, "the server cancels any call still running after this long", min=0, exclusive_min=True
    )
    stall_s: float = opt(
        60.0,
        "a call whose next message does not arrive (or whose node takes no Fetch chunk) for this long is cut; "
        "bounds a stalled link, not a slow one",
        min=0,
        exclusive_min=True,
    )
    refusal_log_s: float = opt(
        10.0,
        "refused requests: 5 of each kind are logged per this many seconds, then one line with the counts",
        min=0,
        exclusive_min=True,
    )
    secagg_stage_s: float = opt(
        60.0,
        "with [secagg]: a protocol stage waits this long for the nodes' answers; missing nodes count as dropped",
        min=0,
        exclusive_min=True,
    )
    max_decoding: int = opt(4, "updates decoded at once (CPU; memory is bounded by max_inflight_mib)", min=1)
    max_inflight_mib: float = opt(
        4096.0,
        "update bytes being received at once, all nodes together, MiB (at least max_update_mib); "
        "a push beyond it is refused and its node retries",
        min=0,
        exclusive_min=True,
    )
    examples_cap: float = opt(
        10.0, "a node's example-count weight is capped at this x the median of recent updates (0 = no cap)", min=0
    )
    norm_cap: float = opt(
        3.0,
        "with [training] max_update_norm = 0: an update's L2 norm is clipped to this x the median "
        "of recent updates (0 = off)",
        min=0,
    )
