"""The byte format: round trips, and clear errors for broken messages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.compression.wire import pack, unpack
from fedge.core.errors import ValidationError


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 300), st.sampled_from(["u1", "i1", "u2", "f2", "f4", "u8"])), max_size=4),
    st.integers(0, 2**32 - 1),
)
def test_pack_unpack_roundtrip(spec: list[tuple[int, str]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    parts = [(rng.integers(0, 100, n).astype(dt),) for n, dt in spec]
    shapes = [(n,) for n, _ in spec]
    names = [f"t{i}" for i in range(len(spec))]
    blob = pack(3, names, shapes, parts)
    msg = unpack(blob)
    assert (msg.codec, msg.names, msg.shapes) == (3, names, shapes)
    for got, want in zip(msg.parts, parts, strict=True):
        np.testing.assert_array_equal(got[0], want[0])
        assert got[0].dtype == want[0].dtype


def test_framing_is_small() -> None:
    blob = pack(0, [], [(60, 10), (10,)], [(np.zeros(600, np.float32),), (np.zeros(10, np.float32),)])
    assert len(blob) - 610 * 4 < 20


@pytest.mark.parametrize(
    "bad, match",
    [
        (b"", "truncated"),
        (b"XX\x01\x00\x00\x00", "marker"),
        (b"FC\x09\x00\x00\x00", "version"),
        (pack(0, [], [(3,)], [(np.zeros(3, np.float32),)])[:-1], "truncated"),
        (pack(0, [], [(3,)], [(np.zeros(3, np.float32),)]) + b"\x00", "trailing"),
    ],
)
def test_broken_messages_are_one_line_validation_errors(bad: bytes, match: str) -> None:
    with pytest.raises(ValidationError, match=match) as info:
        unpack(bad)
    assert "\n" not in str(info.value)
