"""Every partitioner covers every index exactly once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import DataError
from fedge.data import partition as P
from fedge.data.federated import Ragged, split_local


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(parts)
    assert len(allidx) == n
    assert np.array_equal(np.sort(allidx), np.arange(n))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(10, 400), k=st.integers(1, 10), seed=st.integers(0, 10_000))
def test_iid_and_powerlaw_cover(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for parts in (P.iid(n, k, rng), P.powerlaw(n, k, rng)):
        assert len(parts) == k
        assert min(len(p) for p in parts) >= 1
        assert_exact_cover(parts, n)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(60, 400),
    k=st.integers(1, 10),
    classes=st.integers(2, 6),
    alpha=st.floats(0.3, 10),
    seed=st.integers(0, 10_000),
)
def test_dirichlet_covers(n: int, k: int, classes: int, alpha: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    parts = P.dirichlet(labels, k, alpha, rng, min_size=1)
    assert len(parts) == k
    assert_exact_cover(parts, n)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 10), spc=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_shards_cover_and_limit_classes(k: int, spc: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), 20)
    parts = P.shards(labels, k, spc, rng)
    assert_exact_cover(parts, len(labels))


def test_shards_give_few_classes_per_client() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = P.shards(labels, 50, 2, np.random.default_rng(0))
    assert max(len(np.unique(labels[p])) for p in parts) <= 2


def test_small_alpha_skews_labels_more() -> None:
    labels = np.repeat(np.arange(10), 200)

    def mean_classes(alpha: float) -> float:
        parts = P.dirichlet(labels, 20, alpha, np.random.default_rng(1))
        return float(np.mean([len(np.unique(labels[p])) for p in parts]))

    assert mean_classes(0.1) < mean_classes(100.0)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=12), frac=st.floats(0, 0.9), seed=st.integers(0, 1000))
def test_local_split_covers_and_keeps_a_training_example(sizes, frac, seed) -> None:
    parts = np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:-1])
    train, test = split_local(parts, frac, np.random.default_rng(seed))
    for k, part in enumerate(parts):
        assert len(train[k]) >= 1
        both = np.concatenate([train[k], test[k]])
        assert np.array_equal(np.sort(both), np.sort(part))


def test_ragged_round_trip() -> None:
    lists = [np.array([3, 1]), np.array([], dtype=np.int64), np.array([7])]
    r = Ragged.from_lists(lists)
    assert len(r) == 3
    assert [list(r[i]) for i in range(3)] == [[3, 1], [], [7]]
    assert list(r.sizes()) == [2, 0, 1]


@pytest.mark.parametrize(
    "call",
    [
        lambda: P.iid(3, 5, np.random.default_rng(0)),
        lambda: P.dirichlet(np.zeros(10, np.int64), 2, 0.0, np.random.default_rng(0)),
        lambda: P.shards(np.zeros(10, np.int64), 2, 0, np.random.default_rng(0)),
        lambda: P.powerlaw(10, 2, np.random.default_rng(0), exponent=-1),
    ],
)
def test_impossible_partitions_raise(call) -> None:
    with pytest.raises(DataError):
        call()
