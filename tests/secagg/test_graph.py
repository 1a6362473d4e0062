"""The SecAgg+ graph is k-regular and symmetric; default (k, t) are safe and checked."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import ConfigError
from fedge.secagg import graph


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 200), half=st.integers(1, 20), seed=st.integers(0, 2**31))
def test_harary_graph_is_regular_and_symmetric(n: int, half: int, seed: int) -> None:
    k = min(2 * half, n - 1)
    adj = graph.neighbours(n, k, seed)
    for u, vs in enumerate(adj):
        assert len(vs) == k and u not in vs
        assert all(u in adj[v] for v in vs)


@pytest.mark.parametrize("n", [10, 100, 500, 5000])
def test_default_parameters_are_a_majority_and_logarithmic(n: int) -> None:
    p = graph.choose_parameters(n, 0.1)
    assert p.t > p.k / 2
    assert graph.failure_probability(p, 0.1) <= 2**-20 or p.classic
    if n >= 500:
        assert p.k <= 6 * math.ceil(math.log2(n)) and not p.classic


def test_small_cohorts_fall_back_to_classic_secagg() -> None:
    assert graph.choose_parameters(20, 0.1).classic


def test_threshold_above_the_clients_is_refused() -> None:
    with pytest.raises(ConfigError, match="threshold"):
        graph.choose_parameters(10, 0.1, k=9, t=12)
    with pytest.raises(ConfigError, match="even"):
        graph.choose_parameters(100, 0.1, k=7)
    with pytest.raises(ConfigError, match="at least 2"):
        graph.choose_parameters(1)
