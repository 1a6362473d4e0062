"""Node keys and signed requests.

Every node has an Ed25519 key pair (``fedge keys new``); the server keeps an allow-list
of public keys and a revocation list, both in the one-line format that ``node.pub``
holds::

    ed25519 <base64 public key> <name>

An allow-list line may mark its key as a relay (``fedge relay``) that answers for up to
``N`` client ids with one partial sum, and bound the examples each of them may claim::

    ed25519 <base64 public key> vehicle-7 relay=4 examples=5000

A node's id is the first 16 hex digits of the SHA-256 of its public key. Every request
carries, as gRPC metadata, the node id, the SHA-256 of its body, a timestamp, a random
nonce and an Ed25519 signature over ``method, SHA-256(body), timestamp, nonce``. Since
the digest travels in the metadata, the server verifies a call (:meth:`Verifier.authenticate`)
before it reads a byte of the body, and then checks that the body it reads has the
signed digest (:meth:`Caller.check`). It refuses unknown keys (UNAUTHENTICATED), bad
signatures, timestamps outside its window, nonces it has already seen (replays) and,
only once the signature holds, revoked keys (PERMISSION_DENIED): nobody can learn
whether a node id is revoked without its private key.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedge.core.errors import ConfigError, TransportError

H_NODE, H_SHA, H_TS, H_NONCE, H_SIG = "fedge-node", "fedge-sha256", "fedge-ts", "fedge-nonce", "fedge-sig"


class AuthError(TransportError):
    """A request was refused by node authentication; ``code`` names the gRPC status."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def node_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def new_keys(out: Path, name: str = "node") -> tuple[Path, Path]:
    """Write ``<name>.key`` (PKCS#8 PEM, mode 0600) and ``<name>.pub`` (one line) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out / f"{name}.key", out / f"{name}.pub"
    if key_path.exists():
        raise ConfigError(f"{key_path} exists; choose another --name or folder")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_text(public_line(key.public_key(), name) + "\n")
    return key_path, pub_path


def public_line(pub: Ed25519PublicKey, name: str) -> str:
    return f"ed25519 {base64.b64encode(_raw(pub)).decode()} {name}"


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: expected an Ed25519 private key")
    return key


def parse_keys(text: str, where: str) -> dict[str, Ed25519PublicKey]:
    """Public keys of an allow- or revocation list, by node id; blank lines and # skipped."""
    keys: dict[str, Ed25519PublicKey] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 2 or parts[0] != "ed25519":
            raise ConfigError(f"{where}:{n}: expected 'ed25519 <base64 key> [name]'")
        try:
            raw = base64.b64decode(parts[1], validate=True)
            pub = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise ConfigError(f"{where}:{n}: not a valid Ed25519 public key") from None
        keys[node_id_of(raw)] = pub
    return keys


@dataclass(frozen=True)
class RelayClaim:
    """What an allow-list grants a relay: ``clients`` client ids, each claiming at most ``examples`` (0 = unbounded)."""

    clients: int
    examples: int = 0
    name: str = field(default="", compare=False)
    """The key's name in the allow-list line (``vehicle-7``): what the records and the report call the relay."""


def parse_relays(text: str, where: str) -> dict[str, RelayClaim]:
    """The keys an allow-list marks ``relay=N`` (optionally ``examples=M``), by node id."""
    out: dict[str, RelayClaim] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) < 2 or parts[0] != "ed25519":
            continue
        opts: dict[str, int] = {}
        for token in parts[3:]:
            key, eq, value = token.partition("=")
            if key not in ("relay", "examples") or not eq or not value.isdigit():
                raise ConfigError(f"{where}:{n}: unknown marking {token[:40]!r} (expected relay=N, examples=M)")
            opts[key] = int(value)
        if "examples" in opts and "relay" not in opts:
            raise ConfigError(f"{where}:{n}: examples=M goes with relay=N")
        if "relay" in opts:
            if opts["relay"] < 1:
                raise ConfigError(f"{where}:{n}: relay=N needs N >= 1")
            out[node_id_of(base64.b64decode(parts[1], validate=True))] = RelayClaim(
                opts["relay"], opts.get("examples", 0), parts[2][:64]
            )
    return out


def signed_message(method: str, digest: str, ts: str, nonce: str) -> bytes:
    """What a node signs: ``digest`` is the hex SHA-256 of the request body."""
    return b"\n".join([b"fedge-v1", method.encode(), digest.encode(), ts.encode(), nonce.encode()])


class Signer:
    """The node side: signs each request's method and body."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.node_id = node_id_of(_raw(key.public_key()))

    def metadata(self, method: str, body: bytes) -> list[tuple[str, str]]:
        ts = f"{time.time():.3f}"
        nonce = secrets.token_hex(16)
        digest = hashlib.sha256(body).hexdigest()
        sig = base64.b64encode(self.key.sign(signed_message(method, digest, ts, nonce))).decode()
        return [(H_NODE, self.node_id), (H_SHA, digest), (H_TS, ts), (H_NONCE, nonce), (H_SIG, sig)]


@dataclass(frozen=True)
class Caller:
    """A call whose signed metadata the server has verified; its body is checked against ``digest``."""

    node_id: str
    method: str
    digest: str

    def check(self, method: str, body: bytes) -> None:
        """Raise :class:`AuthError` unless ``body`` is the body of this signed ``method`` call."""
        if method != self.method or hashlib.sha256(body).hexdigest() != self.digest:
            raise AuthError(
                "UNAUTHENTICATED", f"bad signature from node {self.node_id}: the {method} body is not the signed one"
            )


@dataclass
class _KeyFile:
    path: Path | None
    mtime: float = -1.0
    keys: dict[str, Ed25519PublicKey] | None = None
    relays: dict[str, RelayClaim] = field(default_factory=dict)

    def get(self) -> dict[str, Ed25519PublicKey]:
        """The file's keys, re-read whenever it changes (add or revoke nodes without restart)."""
        if self.path is None:
            return {}
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            raise ConfigError(f"{self.path}: key list not found") from None
        if self.keys is None or mtime != self.mtime:
            text = self.path.read_text()
            self.keys = parse_keys(text, str(self.path))
            self.relays = parse_relays(text, str(self.path))
            self.mtime = mtime
        return self.keys


class Verifier:
    """The server side: checks a request's signature, freshness and nonce."""

    def __init__(
        self,
        allow: Path | None,
        revoked: Path | None = None,
        *,
        window_s: float = 60.0,
        extra_keys: Sequence[Ed25519PublicKey] = (),
    ) -> None:
        self._allow = _KeyFile(allow)
        self._revoked = _KeyFile(revoked)
        self._extra = {node_id_of(_raw(k)): k for k in extra_keys}
        self.window_s = window_s
        self._seen: set[str] = set()
        self._seen_order: collections.deque[tuple[float, str]] = collections.deque()
        self._lock = threading.Lock()
        self._allow.get()
        self._revoked.get()

    def relays(self) -> dict[str, RelayClaim]:
        """Every relay the allow-list marks, by node id."""
        self._allow.get()
        return dict(self._allow.relays)

    def relay(self, node_id: str) -> RelayClaim | None:
        """The relay claim the allow-list grants ``node_id``; None for a plain node."""
        self._allow.get()
        return self._allow.relays.get(node_id)

    def verify(self, method: str, body: bytes, metadata: Sequence[tuple[str, str | bytes]]) -> str:
        """Return the authenticated node id of a whole request, or raise :class:`AuthError`."""
        caller = self.authenticate(method, metadata)
        caller.check(method, body)
        return caller.node_id

    def authenticate(self, method: str, metadata: Sequence[tuple[str, str | bytes]]) -> Caller:
        """Check a call's signed metadata alone (no body read yet); raise :class:`AuthError` if refused."""
        md = {k: v if isinstance(v, str) else v.decode("latin-1") for k, v in metadata}
        node, digest, ts, nonce, sig = (md.get(h, "")[:128] for h in (H_NODE, H_SHA, H_TS, H_NONCE, H_SIG))
        if not (node and digest and ts and nonce and sig):
            raise AuthError("UNAUTHENTICATED", "request is not signed (missing fedge-* metadata)")
        revoked = self._revoked.get()
        pub = self._allow.get().get(node) or self._extra.get(node) or revoked.get(node)
        if pub is None:
            raise AuthError("UNAUTHENTICATED", f"node {node[:16]!r} is not in the allow-list")
        try:
            t = float(ts)
        except ValueError:
            raise AuthError("UNAUTHENTICATED", "request timestamp is not a number") from None
        now = time.time()
        if not abs(now - t) <= self.window_s:
            raise AuthError("UNAUTHENTICATED", f"stale request from node {node}: timestamp {now - t:+.0f}s off")
        try:
            pub.verify(base64.b64decode(sig, validate=True), signed_message(method, digest, ts, nonce))
        except (InvalidSignature, ValueError):
            raise AuthError("UNAUTHENTICATED", f"bad signature from node {node}") from None
        if node in revoked:
            raise AuthError("PERMISSION_DENIED", f"node {node} is revoked")
        key = f"{node}:{nonce}"
        with self._lock:
            if key in self._seen:
                raise AuthError("UNAUTHENTICATED", f"replayed request from node {node}")
            # A nonce must be remembered while a request carrying it could still be fresh:
            # forget, oldest first, those received more than two windows ago (O(1) amortised).
            horizon = now - 2 * self.window_s
            while self._seen_order and self._seen_order[0][0] < horizon:
                self._seen.discard(self._seen_order.popleft()[1])
            self._seen.add(key)
            self._seen_order.append((now, key))
        return Caller(node, method, digest)
