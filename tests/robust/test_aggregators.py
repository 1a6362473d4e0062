"""Properties of the robust aggregation rules against plain NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import ConfigError
from fedge.robust import aggregators as agg

SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def matrices(draw: st.DrawFn, min_rows: int = 1) -> np.ndarray:
    n = draw(st.integers(min_rows, 12))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).normal(0, 5, (n, d))


@SETTINGS
@given(matrices())
def test_median_equals_numpy(x: np.ndarray) -> None:
    ref = np.array([np.median(x[:, j]) for j in range(x.shape[1])])
    np.testing.assert_allclose(agg.coordinate_median(x), ref, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(matrices(), st.floats(0, 0.49))
def test_trimmed_mean_equals_references(x: np.ndarray, beta: float) -> None:
    n = x.shape[0]
    k = int(np.floor(beta * n))
    ref = np.array([np.mean(sorted(x[:, j])[k : n - k]) for j in range(x.shape[1])])
    got = agg.trimmed_mean(x, beta)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, scipy.stats.trim_mean(x, beta, axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("beta", [0.5, 0.7, -0.1])
def test_trimmed_mean_refuses_fraction_of_half_or_more(beta: float) -> None:
    with pytest.raises(ConfigError, match="trim_fraction"):
        agg.trimmed_mean(np.ones((4, 2)), beta)


@st.composite
def attacked(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    f = draw(st.integers(0, 3))
    honest = draw(st.integers(2 * f + 3 - f, 10))
    d = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    good = rng.normal(0, 1, (honest, d))
    bad = rng.normal(0, 1, (f, d)) + rng.choice([-1, 1], (f, d)) * draw(st.floats(100, 1e4))
    x = np.concatenate([good, bad])
    return x, f


@SETTINGS
@given(attacked())
def test_krum_picks_the_honest_cluster(case: tuple[np.ndarray, int]) -> None:
    x, f = case
    honest = x.shape[0] - f
    assert int(agg.krum_select(x, f)[0]) < honest
    chosen = agg.krum_select(x, f, m=honest)
    assert sorted(int(i) for i in chosen) == list(range(honest))


@SETTINGS
@given(attacked())
def test_bulyan_and_median_stay_in_the_honest_range(case: tuple[np.ndarray, int]) -> None:
    x, f = case
    good = x[: x.shape[0] - f]
    lo, hi = good.min(axis=0) - 1e-9, good.max(axis=0) + 1e-9
    med = agg.coordinate_median(x)
    assert np.all((med >= lo) & (med <= hi))
    if x.shape[0] >= 4 * f + 3:
        b = agg.bulyan(x, f)
        assert np.all((b >= lo) & (b <= hi))


def test_krum_with_too_few_clients_names_n_and_f() -> None:
    with pytest.raises(ConfigError, match=r"n >= 2f \+ 3.*n = 6.*f = 2"):
        agg.krum(np.zeros((6, 3)), 2)
    with pytest.raises(ConfigError, match=r"bulyan needs n >= 4f \+ 3"):
        agg.bulyan(np.zeros((10, 3)), 2)


@SETTINGS
@given(matrices(), st.floats(1e-3, 10))
def test_norm_bounding_never_exceeds_the_bound(x: np.ndarray, bound: float) -> None:
    clipped = agg.clip_rows(x, bound)
    assert np.all(np.linalg.norm(clipped, axis=1) <= bound * (1 + 1e-12))
    small = np.linalg.norm(x, axis=1) <= bound
    np.testing.assert_allclose(clipped[small], x[small])
    med = float(np.median(np.linalg.norm(x, axis=1)))
    np.testing.assert_allclose(
        agg.norm_bounded_mean(x), agg.clip_rows(x, med).mean(axis=0) if med > 0 else np.zeros(x.shape[1])
    )


@SETTINGS
@given(matrices(min_rows=2), st.floats(0.01, 5), st.integers(1, 4))
def test_centered_clipping_moves_at_most_tau_per_iteration(x: np.ndarray, tau: float, iters: int) -> None:
    center = np.zeros(x.shape[1])
    v = agg.centered_clip(x, center, tau, iters)
    assert np.linalg.norm(v - center) <= iters * tau * (1 + 1e-9)


def test_centered_clipping_ignores_far_outliers() -> None:
    rng = np.random.default_rng(0)
    good = rng.normal(1.0, 0.1, (8, 5))
    x = np.concatenate([good, np.full((2, 5), -1e6)])
    v = agg.centered_clip(x, good.mean(axis=0), None, 3)
    assert np.linalg.norm(v - good.mean(axis=0)) < 0.6
