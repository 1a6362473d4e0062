"""Properties of the privacy maths: clipping bounds, noise split, adaptive clipping, local noise."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import ConfigError
from fedge.core.params import l2_norm
from fedge.privacy import mechanisms as mech

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def updates(draw: st.DrawFn) -> list[np.ndarray]:
    shapes = draw(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 4)), min_size=1, max_size=3))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.floats(1e-6, 1e4))
    rng = np.random.default_rng(seed)
    return [rng.normal(0, scale, s).astype(np.float32) for s in shapes]


@SETTINGS
@given(updates(), st.floats(1e-4, 1e3))
def test_l2_clipping_never_yields_a_norm_above_c(params: list[np.ndarray], c: float) -> None:
    clipped, norm = mech.clip_l2(params, c)
    assert l2_norm(clipped) <= c
    assert all(x.dtype == np.float32 and x.shape == p.shape for x, p in zip(clipped, params, strict=True))
    assert norm == pytest.approx(l2_norm(params))
    if norm <= c:
        for x, p in zip(clipped, params, strict=True):
            np.testing.assert_array_equal(x, p)


@SETTINGS
@given(updates(), st.floats(1e-4, 1e3))
def test_l1_clipping_never_yields_a_norm_above_c(params: list[np.ndarray], c: float) -> None:
    clipped, _ = mech.clip_l1(params, c)
    assert sum(float(np.abs(x.astype(np.float64)).sum()) for x in clipped) <= c


@SETTINGS
@given(st.floats(0.3, 10), st.floats(1, 100))
def test_noise_split_keeps_the_total_privacy_of_one_gaussian(z: float, sigma_b: float) -> None:
    if 1 / z**2 - 1 / (2 * sigma_b) ** 2 <= 0:
        with pytest.raises(ConfigError, match=f"need count_noise > {z / 2:.4g}"):
            mech.split_noise(z, sigma_b)
        return
    zd = mech.split_noise(z, sigma_b)
    assert zd >= z
    assert 1 / zd**2 + 1 / (2 * sigma_b) ** 2 == pytest.approx(1 / z**2)


def test_adaptive_clipping_moves_toward_the_target_quantile() -> None:
    assert mech.adaptive_clip_update(1.0, 0.9, target_quantile=0.5, lr=0.2) < 1.0
    assert mech.adaptive_clip_update(1.0, 0.1, target_quantile=0.5, lr=0.2) > 1.0
    assert mech.adaptive_clip_update(2.0, 0.5, target_quantile=0.5, lr=0.2) == 2.0
    assert mech.adaptive_clip_update(1.0, 1.0, target_quantile=0.0, lr=0.2) == pytest.approx(math.exp(-0.2))


def test_local_noise_scales_meet_their_stated_guarantees() -> None:
    sigma = mech.gaussian_sigma(2.0, 1e-5, sensitivity=1.0)
    assert dp_accounting.get_epsilon_gaussian(sigma, 1e-5) == pytest.approx(2.0, rel=1e-4)
    assert mech.gaussian_sigma(2.0, 1e-5, sensitivity=3.0) == pytest.approx(3 * sigma)
    assert mech.laplace_scale(0.5, 2.0) == 4.0
    with pytest.raises(ConfigError, match="local_epsilon must be a positive finite number, got 0"):
        mech.laplace_scale(0.0, 1.0)
    with pytest.raises(ConfigError, match=r"local_delta must be in \(0, 1\)"):
        mech.gaussian_sigma(1.0, 0.0, 1.0)
