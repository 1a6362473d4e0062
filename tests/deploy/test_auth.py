"""Node keys and signed requests: unknown, revoked, stale, replayed and forged ones refused."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from fedge.core.errors import ConfigError
from fedge.deploy.auth import AuthError, Signer, Verifier, load_private, new_keys, parse_keys


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Signer, Path]:
    key, pub = new_keys(tmp_path, "dev")
    return Signer(load_private(key)), pub


def test_new_keys_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    key, pub = new_keys(tmp_path, "pi")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pub.read_text().startswith("ed25519 ") and pub.read_text().split()[2] == "pi"
    with pytest.raises(ConfigError, match="exists"):
        new_keys(tmp_path, "pi")


def test_a_signed_request_from_an_allowed_node_passes(pair: tuple[Signer, Path]) -> None:
    signer, pub = pair
    v = Verifier(pub)
    assert v.verify("Poll", b"body", signer.metadata("Poll", b"body")) == signer.node_id


def test_a_replayed_request_is_refused(pair: tuple[Signer, Path]) -> None:
    signer, pub = pair
    v = Verifier(pub)
    md = signer.metadata("Poll", b"x")
    v.verify("Poll", b"x", md)
    with pytest.raises(AuthError, match="replayed") as e:
        v.verify("Poll", b"x", md)
    assert e.value.code == "UNAUTHENTICATED"


def test_a_stale_timestamp_is_refused(pair: tuple[Signer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    signer, pub = pair
    v = Verifier(pub, window_s=30)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 120)
    md = signer.metadata("Poll", b"x")
    monkeypatch.setattr(time, "time", real)
    with pytest.raises(AuthError, match="stale"):
        v.verify("Poll", b"x", md)


def test_a_changed_body_or_method_breaks_the_signature(pair: tuple[Signer, Path]) -> None:
    signer, pub = pair
    v = Verifier(pub)
    with pytest.raises(AuthError, match="bad signature"):
        v.verify("Poll", b"other", signer.metadata("Poll", b"x"))
    with pytest.raises(AuthError, match="bad signature"):
        v.verify("Join", b"x", signer.metadata("Poll", b"x"))


def test_unknown_and_revoked_nodes_are_refused_with_their_own_status(tmp_path: Path, pair: tuple[Signer, Path]) -> None:
    signer, pub = pair
    _other_key, other_pub = new_keys(tmp_path, "other")
    v = Verifier(other_pub)
    with pytest.raises(AuthError, match="not in the allow-list") as e:
        v.verify("Poll", b"", signer.metadata("Poll", b""))
    assert e.value.code == "UNAUTHENTICATED"
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("")
    v = Verifier(pub, revoked)
    v.verify("Poll", b"", signer.metadata("Poll", b""))
    time.sleep(0.01)
    revoked.write_text(pub.read_text())
    with pytest.raises(AuthError, match="revoked") as e:
        v.verify("Poll", b"", signer.metadata("Poll", b""))
    assert e.value.code == "PERMISSION_DENIED"


def test_unsigned_requests_are_refused(pair: tuple[Signer, Path]) -> None:
    _, pub = pair
    with pytest.raises(AuthError, match="not signed"):
        Verifier(pub).verify("Poll", b"", [("fedge-node", "abc")])


def test_malformed_key_lists_name_the_line() -> None:
    with pytest.raises(ConfigError, match=r"allow\.txt:2: expected"):
        parse_keys("# nodes\nssh-rsa AAAA\n", "allow.txt")
    with pytest.raises(ConfigError, match=r"allow\.txt:1: not a valid Ed25519"):
        parse_keys("ed25519 AAAA x\n", "allow.txt")


def test_nonces_are_forgotten_only_once_their_request_can_no_longer_be_fresh(
    pair: tuple[Signer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    signer, pub = pair
    v = Verifier(pub, window_s=10)
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    old = signer.metadata("Poll", b"x")
    v.verify("Poll", b"x", old)
    for _ in range(50):  # many requests inside the window: the old nonce is kept
        clock[0] += 0.1
        md = signer.metadata("Poll", b"y")
        v.verify("Poll", b"y", md)
    with pytest.raises(AuthError, match="replayed"):
        v.verify("Poll", b"x", old)
    clock[0] += 25  # two windows later: the old request is stale, and its nonce is forgotten
    v.verify("Poll", b"z", signer.metadata("Poll", b"z"))
    assert len(v._seen) == 1
    with pytest.raises(AuthError, match="stale"):
        v.verify("Poll", b"x", old)
