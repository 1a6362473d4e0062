"""The pickle-free bundle encoding and its chunked, checksummed transfer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedge.deploy import wire
from fedge.deploy.proto import pb

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
arrays = hnp.arrays(
    st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_]),
    hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
)
trees = st.recursive(
    st.one_of(scalars, arrays),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        )
    if isinstance(a, list | tuple):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def roundtrip(obj: Any, chunk: int = 7) -> Any:
    out = wire.encode(obj, chunk)
    header = wire.parse(pb.BundleHeader, wire.dump(out.header))
    chunks = [wire.parse(pb.Chunk, wire.dump(c)) for c in out.chunks()]
    return wire.decode(header, chunks, max_bytes=1 << 30)


@settings(max_examples=50, deadline=None)
@given(trees, st.integers(1, 64))
def test_any_tree_survives_encode_chunk_decode(tree: Any, chunk: int) -> None:
    assert same(tree, roundtrip(tree, chunk))


def test_model_sized_params_cut_into_chunks_with_one_checksum_each() -> None:
    params = [np.arange(1000, dtype=np.float32).reshape(10, 100), np.ones(3, np.float32)]
    out = wire.encode({"params": params}, chunk_size=1024)
    assert out.header.total_bytes == 4012
    assert len(out.header.chunk_sha256) == 4
    assert [len(c.data) for c in out.chunks()] == [1024, 1024, 1024, 940]
    assert same(params, roundtrip({"params": params}, 1024)["params"])


def test_a_corrupted_chunk_is_refused_by_its_checksum() -> None:
    out = wire.encode([np.zeros(100, np.float32)], chunk_size=128)
    chunks = list(out.chunks())
    chunks[1].data = bytes([chunks[1].data[0] ^ 1]) + chunks[1].data[1:]
    with pytest.raises(wire.WireError, match="chunk 1 fails its SHA-256"):
        wire.decode(out.header, chunks, max_bytes=1 << 20)


def test_chunks_out_of_order_missing_or_resized_are_refused() -> None:
    out = wire.encode([np.zeros(100, np.float32)], chunk_size=128)
    chunks = list(out.chunks())
    with pytest.raises(wire.WireError, match="expected chunk 0"):
        wire.decode(out.header, chunks[1:], max_bytes=1 << 20)
    with pytest.raises(wire.WireError, match="incomplete"):
        wire.decode(out.header, chunks[:-1], max_bytes=1 << 20)
    chunks[0].data += b"x"
    with pytest.raises(wire.WireError, match="bytes, expected"):
        wire.decode(out.header, chunks, max_bytes=1 << 20)


def test_header_limits_are_checked_before_any_allocation() -> None:
    out = wire.encode([np.zeros(1000, np.float32)])
    with pytest.raises(wire.WireError, match="exceeds the limit"):
        wire.Incoming(out.header, max_bytes=100)
    huge = pb.BundleHeader(chunk_size=1024, total_bytes=0)
    huge.tensors.add(dtype="float32", shape=[2**40, 2**40])
    with pytest.raises(wire.WireError, match="exceeds the limit"):
        wire.Incoming(huge, max_bytes=1 << 30)
    bad = pb.BundleHeader(chunk_size=1024)
    bad.tensors.add(dtype="object", shape=[1])
    with pytest.raises(wire.WireError, match="not allowed"):
        wire.Incoming(bad, max_bytes=1 << 30)


def test_objects_that_are_not_plain_data_cannot_be_sent() -> None:
    with pytest.raises(wire.WireError, match="cannot be sent"):
        wire.encode({"f": object()})
    with pytest.raises(wire.WireError, match="keys must be strings"):
        wire.encode({1: 2})
    with pytest.raises(wire.WireError, match="cannot be sent"):
        wire.encode(np.array(["a"], dtype=object))


def test_malformed_protobuf_bytes_raise_a_wire_error() -> None:
    with pytest.raises(wire.WireError, match="malformed BundleHeader"):
        wire.parse(pb.BundleHeader, b"\xff\xff\xff")
