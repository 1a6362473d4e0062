"""Properties of the codec maths: error bounds, unbiasedness, bit packing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.compression.codecs import (
    CODECS,
    QSGD,
    BFloat16,
    Float16,
    Int8,
    RandK,
    Rotated,
    Sign,
    TopK,
    hadamard,
    kept,
    make_codec,
    pack_bits,
    unpack_bits,
)
from fedge.core.errors import ConfigError

SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    shape = draw(st.sampled_from([(7,), (1,), (5, 3), (4, 2, 3), (33,), (16, 9)]))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    return (np.random.default_rng(seed).normal(0, scale, shape)).astype(np.float32)


@SETTINGS
@given(tensors(), st.integers(0, 2**32 - 1))
def test_fp16_bf16_relative_error(x: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    err16 = np.abs(Float16().roundtrip(x, rng) - x)
    assert np.all(err16 <= 2.0**-11 * np.abs(x) + 2.0**-24)
    errbf = np.abs(BFloat16().roundtrip(x, rng) - x)
    assert np.all(errbf <= 2.0**-8 * np.abs(x) + 1e-38)


@SETTINGS
@given(tensors(), st.integers(0, 2**32 - 1), st.booleans(), st.booleans())
def test_int8_error_below_one_step(x: np.ndarray, seed: int, per_channel: bool, stochastic: bool) -> None:
    codec = Int8(per_channel=per_channel, stochastic=stochastic)
    parts = codec.encode(x, np.random.default_rng(seed))
    q, scale = parts
    assert q.dtype == np.int8
    assert scale.size == (x.shape[0] if per_channel and x.ndim >= 2 else 1)
    y = codec.decode(parts, x.shape)
    rows = scale.size
    step = np.repeat(scale.astype(np.float64), x.size // rows).reshape(x.shape)
    bound = step * (1.0 if stochastic else 0.5) * (1 + 1e-5) + 1e-12
    assert np.all(np.abs(y.astype(np.float64) - x) <= bound)


@SETTINGS
@given(tensors(), st.integers(0, 2**32 - 1), st.sampled_from([1, 4, 16]), st.sampled_from([4, 512]))
def test_qsgd_error_below_bucket_norm_over_s(x: np.ndarray, seed: int, levels: int, bucket: int) -> None:
    codec = QSGD(levels=levels, bucket=bucket)
    y = codec.roundtrip(x, np.random.default_rng(seed)).astype(np.float64)
    flat = np.zeros(-(-x.size // bucket) * bucket)
    flat[: x.size] = x.ravel()
    norms = np.repeat(np.linalg.norm(flat.reshape(-1, bucket), axis=1), bucket)[: x.size]
    assert np.all(np.abs(y.ravel() - x.ravel()) <= norms / levels * (1 + 1e-5) + 1e-12)


@SETTINGS
@given(tensors(), st.integers(0, 2**32 - 1))
def test_sign_keeps_signs_and_l1_mass(x: np.ndarray, seed: int) -> None:
    y = Sign().roundtrip(x, np.random.default_rng(seed))
    nz = x != 0
    assert np.all(np.sign(y[nz]) == np.sign(x[nz]))
    assert math.isclose(float(np.abs(y).sum()), float(np.abs(x).sum(dtype=np.float64)), rel_tol=1e-4)


@SETTINGS
@given(tensors(), st.sampled_from([0.01, 0.2, 0.5, 1.0]))
def test_topk_keeps_the_largest_exactly(x: np.ndarray, k: float) -> None:
    y = TopK(k=k).roundtrip(x, np.random.default_rng(0))
    kk = kept(x.size, k)
    assert np.count_nonzero(y) <= kk
    kept_mask = y != 0
    np.testing.assert_array_equal(y[kept_mask], x[kept_mask])
    dropped = np.abs(x[~kept_mask])
    if dropped.size and kept_mask.any():
        assert dropped.max() <= np.abs(x[kept_mask]).min()


@SETTINGS
@given(tensors(), st.integers(0, 2**32 - 1), st.sampled_from([0.1, 0.5, 1.0]))
def test_randk_sends_exact_values_at_a_seeded_subset(x: np.ndarray, seed: int, k: float) -> None:
    codec = RandK(k=k)
    parts = codec.encode(x, np.random.default_rng(seed))
    assert parts[1].size == kept(x.size, k)
    y = codec.decode(parts, x.shape)
    sent = y != 0
    np.testing.assert_array_equal(y[sent], x[sent])


@SETTINGS
@given(tensors(), st.integers(0, 2**32 - 1), st.sampled_from(["int8", "qsgd", "sign"]))
def test_rotation_is_orthogonal_and_keeps_the_inner_error(x: np.ndarray, seed: int, inner: str) -> None:
    n = 1 << max(0, (x.size - 1).bit_length())
    v = np.random.default_rng(seed).normal(size=n)
    np.testing.assert_allclose(hadamard(hadamard(v)), v, atol=1e-9)
    assert math.isclose(np.linalg.norm(hadamard(v)), np.linalg.norm(v), rel_tol=1e-9)
    codec = make_codec(inner, rotate=True, levels=16)
    assert isinstance(codec, Rotated)
    y = codec.roundtrip(x, np.random.default_rng(seed))
    if inner == "int8":
        # the L2 error equals the inner codec's on the rotated vector: below one step per value
        step = np.abs(hadamard(np.pad(x.ravel().astype(np.float64), (0, n - x.size)))).max() / 127
        assert np.linalg.norm(y - x) <= math.sqrt(n) * step * (1 + 1e-4) + 1e-9


def _mean_of_draws(codec_name: str, x: np.ndarray, draws: int, **kw: object) -> np.ndarray:
    codec = make_codec(codec_name, **kw)  # type: ignore[arg-type]
    rng = np.random.default_rng(123)
    return np.mean([codec.roundtrip(x, rng) for _ in range(draws)], axis=0)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_stochastic_quantisers_are_unbiased(seed: int) -> None:
    x = np.random.default_rng(seed).normal(0, 1, (6, 5)).astype(np.float32)
    draws = 2000
    for name, kw, step in [
        ("int8", {"stochastic": True}, np.abs(x).max() / 127),
        ("qsgd", {"levels": 2, "bucket": 8}, np.linalg.norm(x) / 2),
        ("randk", {"k": 0.3, "rescale": True}, np.abs(x).max() * (1 / 0.3)),
    ]:
        mean = _mean_of_draws(name, x, draws, **kw)
        # the standard error of a mean of bounded draws is at most step / sqrt(draws); 5 of them
        assert np.all(np.abs(mean - x) <= 5 * step / math.sqrt(draws)), name


def test_deterministic_int8_is_biased_where_stochastic_is_not() -> None:
    x = np.full((1, 4), 0.3, dtype=np.float32)
    x[0, 0] = 127.0
    det = Int8(stochastic=False).roundtrip(x, np.random.default_rng(0))
    assert det[0, 1] == 0.0
    mean = _mean_of_draws("int8", x, 4000, stochastic=True)
    assert abs(mean[0, 1] - 0.3) < 0.05


@SETTINGS
@given(st.integers(1, 12), st.integers(0, 300), st.integers(0, 2**32 - 1))
def test_bit_packing_roundtrips(width: int, n: int, seed: int) -> None:
    v = np.random.default_rng(seed).integers(0, 1 << width, n).astype(np.uint32)
    packed = pack_bits(v, width)
    assert packed.size == -(-n * width // 8)
    np.testing.assert_array_equal(unpack_bits(packed, width, n), v)


def test_unknown_codec_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown codec 'zip'; valid: " + ", ".join(CODECS)):
        make_codec("zip")


@pytest.mark.parametrize("k", [0.0, -0.1, 1.5])
def test_k_outside_unit_interval_is_refused(k: float) -> None:
    with pytest.raises(ConfigError, match=r"compression\.k: .*\(0, 1\]"):
        make_codec("topk", k=k)


def test_only_quantisers_can_be_rotated() -> None:
    with pytest.raises(ConfigError, match="rotate"):
        make_codec("topk", rotate=True)
