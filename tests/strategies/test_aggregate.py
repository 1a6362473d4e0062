"""Properties of the aggregation maths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import AggregationError
from fedge.core.types import ClientUpdate
from fedge.strategies import Accumulator, FedAvg, weighted_mean

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def cohorts(draw: st.DrawFn) -> tuple[list[list[np.ndarray]], list[float], list[int]]:
    n = draw(st.integers(1, 8))
    shapes = draw(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3)), min_size=1, max_size=3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    updates = [[rng.normal(0, 10, s).astype(np.float32) for s in shapes] for _ in range(n)]
    weights = [float(w) for w in rng.integers(1, 1000, n)]
    perm = [int(i) for i in rng.permutation(n)]
    return updates, weights, perm


@SETTINGS
@given(cohorts())
def test_weighted_mean_equals_numpy_reference(cohort) -> None:
    updates, weights, _ = cohort
    got = weighted_mean(updates, weights)
    for t, g in enumerate(got):
        stacked = np.stack([u[t].astype(np.float64) for u in updates])
        want = np.average(stacked, axis=0, weights=weights)
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)
        assert g.dtype == np.float32


@SETTINGS
@given(cohorts())
def test_weighted_mean_invariant_to_client_order(cohort) -> None:
    updates, weights, perm = cohort
    a = weighted_mean(updates, weights)
    b = weighted_mean([updates[i] for i in perm], [weights[i] for i in perm])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(cohorts())
def test_streamed_fedavg_sums_equal_batch_mean(cohort) -> None:
    updates, weights, perm = cohort
    strategy = FedAvg()
    acc = Accumulator()
    for i in perm:
        acc.add(strategy.contribution(ClientUpdate(i, updates[i], int(weights[i]))))
    assert acc.count == len(updates)
    got = strategy.mean_delta(acc.sums)
    for g, w in zip(got, weighted_mean(updates, weights), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_uniform_weighting_ignores_example_counts() -> None:
    strategy = FedAvg(weighting="uniform")
    acc = Accumulator()
    acc.add(strategy.contribution(ClientUpdate(0, [np.array([0.0], np.float32)], 1000)))
    acc.add(strategy.contribution(ClientUpdate(1, [np.array([2.0], np.float32)], 1)))
    assert strategy.mean_delta(acc.sums)[0][0] == pytest.approx(1.0)


def test_zero_weight_is_an_error() -> None:
    with pytest.raises(AggregationError, match="positive"):
        weighted_mean([[np.zeros(2, np.float32)]], [0.0])


def test_bad_weighting_name() -> None:
    with pytest.raises(AggregationError, match="weighting"):
        FedAvg(weighting="by-size")
