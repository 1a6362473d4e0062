"""Fixed-point encoding into Z_{2^b}: exact sums, unbiased rounding, overflow refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import ConfigError
from fedge.secagg import fixedpoint as fp


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 50), bits=st.sampled_from([32, 64]), seed=st.integers(0, 2**32 - 1))
def test_the_ring_sum_of_encodings_decodes_to_the_integer_sum(n: int, bits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    clip = 2.0
    scale = fp.max_scale(n, clip, bits)
    xs = rng.uniform(-3, 3, size=(n, 16))
    words = [fp.encode(x, clip=clip, scale=scale, rng=rng, bits=bits) for x in xs]
    total = np.zeros(16, dtype=fp.ring_dtype(bits))
    for w in words:
        total += w
    signed = sum(w.view(f"int{bits}").astype(object) for w in words)
    assert total.view(f"int{bits}").astype(object).tolist() == list(signed)
    approx = fp.decode(total, scale=scale, bits=bits)
    assert np.allclose(approx, np.clip(xs, -clip, clip).sum(axis=0), atol=n / scale + 1e-9)


def test_stochastic_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(1)
    x = np.full(200_000, 0.3)
    words = fp.encode(x, clip=1.0, scale=1.0, rng=rng)
    assert set(np.unique(words).tolist()) == {0, 1}
    assert abs(fp.decode(words, scale=1.0).mean() - 0.3) < 0.01


def test_negative_values_wrap_as_twos_complement() -> None:
    words = fp.encode(np.array([-1.0, 1.0]), clip=1.0, scale=4.0, rng=np.random.default_rng(0))
    assert words.dtype == np.uint32
    assert words.tolist() == [2**32 - 4, 4]


def test_overflow_against_n_and_b_is_refused() -> None:
    fp.check_overflow(100, 1.0, fp.max_scale(100, 1.0))
    with pytest.raises(ConfigError, match="overflows the 32-bit ring"):
        fp.check_overflow(100, 1.0, fp.max_scale(100, 1.0) * 2)
    with pytest.raises(ConfigError, match="32 or 64"):
        fp.ring_dtype(16)
