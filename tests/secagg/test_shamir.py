"""Shamir sharing over GF(2^31 - 1): any t shares reconstruct, the field maths is exact."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.secagg import shamir


@settings(max_examples=40, deadline=None)
@given(secret=st.binary(min_size=1, max_size=64), n=st.integers(2, 12), data=st.data())
def test_any_t_shares_reconstruct_the_secret(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    shares = shamir.split_secret(secret, xs, t)
    pick = data.draw(st.permutations(range(n)))[:t]
    got = shamir.combine_secret([xs[i] for i in pick], shares[pick], len(secret))
    assert got == secret


def test_every_subset_of_t_shares_agrees_and_fewer_do_not() -> None:
    secret = os.urandom(32)
    xs = [3, 7, 11, 19, 23]
    shares = shamir.split_secret(secret, xs, 3)
    for subset in itertools.combinations(range(5), 3):
        idx = list(subset)
        assert shamir.combine_secret([xs[i] for i in idx], shares[idx], 32) == secret
    two = [0, 1]
    try:
        got: bytes | None = shamir.combine_secret([xs[i] for i in two], shares[two], 32)
    except shamir.ShamirError:
        got = None
    assert got != secret


def test_shares_are_field_elements_and_vary_between_sharings() -> None:
    secret = bytes(32)
    a = shamir.split_secret(secret, [1, 2, 3], 2)
    b = shamir.split_secret(secret, [1, 2, 3], 2)
    assert a.max() < shamir.PRIME
    assert not np.array_equal(a, b)


def test_lagrange_coefficients_sum_to_one() -> None:
    lam = shamir.lagrange_at_zero((2, 5, 9, 14))
    assert sum(lam) % shamir.PRIME == 1


@pytest.mark.parametrize(("xs", "t"), [([1, 2], 3), ([1, 1, 2], 2), ([0, 1], 1), ([1, 2], 0)])
def test_bad_parameters_are_refused(xs: list[int], t: int) -> None:
    with pytest.raises(shamir.ShamirError):
        shamir.split_secret(b"secret", xs, t)
