"""A cohort's batch orders drawn at once equal each client's own generator, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.clients.base import batches
from fedge.core import streams
from fedge.core.types import client_rng


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    round_num=st.integers(0, 2**32 - 1),
    ids=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=12, unique=True),
    n=st.integers(2, 70),
    count=st.integers(1, 4),
    stream=st.integers(0, 3),
)
def test_drawn_permutations_equal_each_clients_generator(
    seed: int, round_num: int, ids: list[int], n: int, count: int, stream: int
) -> None:
    drawn = streams.client_permutations(seed, round_num, ids, n, count, stream)
    for i, cid in enumerate(ids):
        g = client_rng(seed, round_num, cid, stream)
        want = np.stack([g.permutation(n) for _ in range(count)])
        np.testing.assert_array_equal(drawn.permutations[i], want)
        after = drawn.generator(i, seed, round_num, cid, stream)
        assert after.bit_generator.state == g.bit_generator.state
        assert after.integers(2**62, size=5).tolist() == g.integers(2**62, size=5).tolist()


def test_epoch_batches_cut_from_the_permutations_are_the_learners() -> None:
    """``batches`` draws one permutation per epoch from the client's generator: the same orders."""
    drawn = streams.client_permutations(0, 4, list(range(40)), 23, 3)
    for cid in range(40):
        g = client_rng(0, 4, cid)
        for epoch in range(3):
            got = batches(23, 5, g)
            order = drawn.permutations[cid, epoch]
            want = [order[lo : lo + 5] for lo in range(0, 23, 5)]
            assert [b.tolist() for b in got] == [b.tolist() for b in want]


def test_numbers_that_do_not_fit_32_bits_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bits"):
        streams.client_permutations(2**32, 1, [0], 5, 1)


def test_this_numpy_is_reproduced() -> None:
    assert streams.available()
