"""Shamir t-of-n secret sharing over the prime field GF(2^31 - 1), vectorised with NumPy.

Shamir, "How to share a secret", CACM 1979. A 256-bit secret is cut into 24-bit chunks,
each an element of the field; every chunk is shared with its own random polynomial of
degree ``t - 1`` (so any ``t - 1`` shares reveal nothing about it). Field elements stay
below 2^31, so a product of two fits in ``uint64`` and all arithmetic is exact NumPy
integer arithmetic over whole arrays. Reconstruction uses exactly ``t`` shares and the
Lagrange coefficients at 0, computed once per set of share holders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

PRIME = (1 << 31) - 1
CHUNK_BYTES = 3
U64 = npt.NDArray[np.uint64]


class ShamirError(ValueError):
    """Bad sharing parameters or inconsistent shares."""


def chunks_for(secret_bytes: int) -> int:
    return -(-secret_bytes // CHUNK_BYTES)


def to_field(secret: bytes) -> U64:
    """Cut ``secret`` into 24-bit big-endian field elements (zero-padded at the end)."""
    m = chunks_for(len(secret))
    padded = np.frombuffer(secret.ljust(m * CHUNK_BYTES, b"\0"), dtype=np.uint8).reshape(m, CHUNK_BYTES)
    v = padded.astype(np.uint64)
    out: U64 = (v[:, 0] << np.uint64(16)) | (v[:, 1] << np.uint64(8)) | v[:, 2]
    return out


def from_field(elements: npt.NDArray[np.integer], secret_bytes: int) -> bytes:
    """Inverse of :func:`to_field`; raises if an element is not a 24-bit chunk."""
    e = np.asarray(elements, dtype=np.uint64)
    if e.size and int(e.max()) >= 1 << 24:
        raise ShamirError("reconstructed value is not a valid secret chunk (inconsistent shares)")
    b = np.stack([(e >> np.uint64(s)) & np.uint64(0xFF) for s in (16, 8, 0)], axis=1).astype(np.uint8)
    return b.tobytes()[:secret_bytes]


def _random_field(shape: tuple[int, ...]) -> U64:
    raw = np.frombuffer(os.urandom(8 * int(np.prod(shape))), dtype=np.uint64).reshape(shape)
    out: U64 = raw % np.uint64(PRIME)
    return out


def split(values: npt.NDArray[np.integer], xs: Sequence[int], threshold: int) -> U64:
    """Share each field element of ``values`` among holders at points ``xs``.

    Returns an array ``(len(xs), len(values))``: row ``j`` is holder ``xs[j]``'s share.
    Any ``threshold`` rows determine ``values``; fewer reveal nothing.
    """
    if not 1 <= threshold <= len(xs):
        raise ShamirError(f"threshold {threshold} must be between 1 and the {len(xs)} holders")
    x = np.asarray(xs, dtype=np.uint64)
    if len(set(xs)) != len(xs) or (x == 0).any() or (x >= PRIME).any():
        raise ShamirError("share points must be distinct, non-zero field elements")
    secret = np.asarray(values, dtype=np.uint64) % np.uint64(PRIME)
    coeffs = _random_field((threshold - 1, secret.size))
    p = np.uint64(PRIME)
    acc = np.zeros((x.size, secret.size), dtype=np.uint64)
    for c in coeffs[::-1]:
        acc = (acc + c[None, :]) % p
        acc = (acc * x[:, None]) % p
    out: U64 = (acc + secret[None, :]) % p
    return out


@lru_cache(maxsize=4096)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The coefficients ``l_j = prod_{m != j} x_m / (x_m - x_j)`` mod the prime.

    The products run over whole columns of a ``t x t`` matrix at once, so a new set of
    ``t`` holders costs ``t`` vector operations and ``t`` modular inverses.
    """
    x = np.asarray(xs, dtype=np.uint64)
    if len(set(xs)) != len(xs):
        raise ShamirError("share points must be distinct")
    p = np.uint64(PRIME)
    diff = (x[None, :] + p - x[:, None]) % p
    np.fill_diagonal(diff, 1)
    numer = np.broadcast_to(x, diff.shape).copy()
    np.fill_diagonal(numer, 1)
    num = np.ones(x.size, dtype=np.uint64)
    den = np.ones(x.size, dtype=np.uint64)
    for m in range(x.size):
        num = num * numer[:, m] % p
        den = den * diff[:, m] % p
    return tuple(int(a) * pow(int(b), -1, PRIME) % PRIME for a, b in zip(num, den, strict=True))


def combine(xs: Sequence[int], shares: npt.NDArray[np.integer]) -> U64:
    """Reconstruct the shared values from exactly ``len(xs)`` share rows.

    ``shares`` is ``(len(xs), m)``; every column is one secret element (several secrets
    held by the same holders are combined in one call).
    """
    y = np.asarray(shares, dtype=np.uint64)
    if y.ndim != 2 or y.shape[0] != len(xs):
        raise ShamirError(f"need one share row per point: {len(xs)} points, shares of shape {y.shape}")
    p = np.uint64(PRIME)
    acc = np.zeros(y.shape[1], dtype=np.uint64)
    for lam, row in zip(lagrange_at_zero(tuple(int(x) for x in xs)), y, strict=True):
        acc = (acc + (row % p) * np.uint64(lam)) % p
    return acc


def split_secret(secret: bytes, xs: Sequence[int], threshold: int) -> U64:
    """Share a byte string; row ``j`` is holder ``xs[j]``'s share (``chunks_for`` elements)."""
    return split(to_field(secret), xs, threshold)


def combine_secret(xs: Sequence[int], shares: npt.NDArray[np.integer], secret_bytes: int) -> bytes:
    return from_field(combine(xs, shares), secret_bytes)
