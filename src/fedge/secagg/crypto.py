"""The cryptographic primitives of secure aggregation, all from the ``cryptography`` package.

* X25519 key agreement, with HKDF-SHA256 turning the shared secret into a 256-bit key
  (Bonawitz et al., CCS 2017, section 4: ``KA.agree`` followed by a KDF);
* AES-256-GCM authenticated encryption of the Shamir shares sent between clients;
* the pseudo-random generator that expands a full 256-bit seed into a mask: the AES-256
  keystream in counter mode, viewed as ``uint32`` words.

Nothing here is fedge's own cryptography: it only fixes how the primitives are combined.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedge.core.errors import TransportError

U32 = npt.NDArray[np.uint32]
SEED_BYTES = 32
NONCE_BYTES = 12
_ZERO_IV = bytes(16)


class DecryptionError(TransportError):
    """A ciphertext failed authentication: tampered, misrouted or from another round."""


def random_seed() -> bytes:
    """A fresh 256-bit seed from the operating system's CSPRNG."""
    return os.urandom(SEED_BYTES)


def new_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as ``(private_raw, public_raw)``, 32 bytes each."""
    sk = X25519PrivateKey.generate()
    return private_bytes(sk), public_of(private_bytes(sk))


def private_bytes(sk: X25519PrivateKey) -> bytes:
    return sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def public_of(private_raw: bytes) -> bytes:
    """The public key belonging to a raw private key (used to check a reconstructed key)."""
    pk = X25519PrivateKey.from_private_bytes(private_raw).public_key()
    return pk.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def agree(private_raw: bytes, peer_public_raw: bytes, info: bytes) -> bytes:
    """X25519 shared secret, stretched by HKDF-SHA256 into a 256-bit key bound to ``info``."""
    shared = X25519PrivateKey.from_private_bytes(private_raw).exchange(
        X25519PublicKey.from_public_bytes(peer_public_raw)
    )
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(shared)


def agree_many(private_raw: bytes, peers_public_raw: Sequence[bytes], info: bytes) -> list[bytes]:
    """:func:`agree` with one private key against several peers (the key is loaded once)."""
    sk = X25519PrivateKey.from_private_bytes(private_raw)
    return [
        HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(
            sk.exchange(X25519PublicKey.from_public_bytes(pk))
        )
        for pk in peers_public_raw
    ]


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM encryption: a random 96-bit nonce followed by ciphertext and tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """Decrypt what :func:`seal` produced; :class:`DecryptionError` if anything was altered."""
    if len(sealed) < NONCE_BYTES + 16:
        raise DecryptionError(f"ciphertext of {len(sealed)} bytes is too short")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        raise DecryptionError("ciphertext failed authentication (tampered, misrouted or wrong round)") from None


def expand(seed: bytes, size: int, dtype: type[np.unsignedinteger[Any]] = np.uint32) -> npt.NDArray[Any]:
    """``size`` pseudo-random words of ``dtype``: the AES-256-CTR keystream under ``seed``.

    Each seed is used for exactly one mask, so the fixed counter start is safe.
    """
    if len(seed) != SEED_BYTES:
        raise ValueError(f"mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
    enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_IV)).encryptor()
    stream = enc.update(bytes(np.dtype(dtype).itemsize * size))
    return np.frombuffer(stream, dtype=dtype)


BLOCK_BYTES = 1 << 18


def add_masks(acc: npt.NDArray[Any], add: Sequence[bytes] = (), subtract: Sequence[bytes] = ()) -> None:
    """``acc += Σ expand(a) − Σ expand(s)`` modulo the word size, in place.

    The vector is processed in cache-sized blocks: for each block every seed's keystream
    continues where the previous block stopped, so each block of ``acc`` stays in cache
    while all masks are added to it, and no mask-sized array is ever allocated.
    """
    streams = []
    for seed, negative in [(a, False) for a in add] + [(s, True) for s in subtract]:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
        streams.append((Cipher(algorithms.AES(seed), modes.CTR(_ZERO_IV)).encryptor(), negative))
    if not streams:
        return
    words = BLOCK_BYTES // acc.itemsize
    zeros = memoryview(bytes(BLOCK_BYTES))
    buf = bytearray(BLOCK_BYTES + 15)
    for start in range(0, acc.size, words):
        block = acc[start : start + words]
        for enc, negative in streams:
            enc.update_into(zeros[: block.nbytes], buf)
            mask = np.frombuffer(buf, dtype=acc.dtype, count=block.size)
            if negative:
                block -= mask
            else:
                block += mask


def add_mask(acc: npt.NDArray[Any], seed: bytes, *, subtract: bool = False) -> None:
    """``acc += expand(seed)`` (or ``-=``) modulo the word size, in place."""
    add_masks(acc, subtract=[seed]) if subtract else add_masks(acc, add=[seed])


def commit(secret: bytes, label: bytes) -> bytes:
    """A SHA-256 commitment to a 256-bit random secret (checks a reconstructed seed)."""
    return hashlib.sha256(label + secret).digest()
