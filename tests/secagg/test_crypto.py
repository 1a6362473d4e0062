"""The primitives: AEAD detects tampering, key agreement is symmetric, masks are pseudo-random."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.secagg import crypto


def test_sealed_share_opens_only_unaltered_and_with_its_associated_data() -> None:
    key = crypto.random_seed()
    sealed = crypto.seal(key, b"share", b"round 1")
    assert crypto.open_sealed(key, sealed, b"round 1") == b"share"
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    for bad, ad in ((bytes(flipped), b"round 1"), (sealed, b"round 2"), (sealed[:10], b"round 1")):
        with pytest.raises(crypto.DecryptionError):
            crypto.open_sealed(key, bad, ad)


def test_key_agreement_is_symmetric_and_bound_to_info() -> None:
    a_sk, a_pk = crypto.new_keypair()
    b_sk, b_pk = crypto.new_keypair()
    assert crypto.agree(a_sk, b_pk, b"x") == crypto.agree(b_sk, a_pk, b"x")
    assert crypto.agree(a_sk, b_pk, b"x") != crypto.agree(a_sk, b_pk, b"y")
    assert crypto.public_of(a_sk) == a_pk


def test_masks_are_deterministic_per_seed_and_cancel() -> None:
    s1, s2 = crypto.random_seed(), crypto.random_seed()
    m = crypto.expand(s1, 1000)
    assert m.dtype == np.uint32 and np.array_equal(m, crypto.expand(s1, 1000))
    assert not np.array_equal(m, crypto.expand(s2, 1000))
    acc = np.arange(1000, dtype=np.uint32)
    crypto.add_mask(acc, s1)
    assert np.array_equal(acc, np.arange(1000, dtype=np.uint32) + m)
    crypto.add_mask(acc, s1, subtract=True)
    assert np.array_equal(acc, np.arange(1000, dtype=np.uint32))
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.expand(b"short", 4)


def test_blocked_masking_equals_whole_keystreams_across_block_edges() -> None:
    size = crypto.BLOCK_BYTES // 4 * 2 + 123
    seeds = [crypto.random_seed() for _ in range(3)]
    acc = np.zeros(size, dtype=np.uint32)
    crypto.add_masks(acc, add=seeds[:2], subtract=seeds[2:])
    expected = crypto.expand(seeds[0], size) + crypto.expand(seeds[1], size) - crypto.expand(seeds[2], size)
    assert np.array_equal(acc, expected)
    wide = np.zeros(size, dtype=np.uint64)
    crypto.add_masks(wide, add=seeds[:1])
    assert np.array_equal(wide, crypto.expand(seeds[0], size, np.uint64))
