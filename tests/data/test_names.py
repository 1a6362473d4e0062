"""Labels and client ids as files hold them: integers kept, names mapped in natural order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedge.core.errors import DataError
from fedge.data.names import encode_ids, encode_labels, group_rows, mapping, natural_key


def test_natural_order_puts_car_2_before_car_10() -> None:
    names = ["car-10", "car-2", "car-1", "bus-3"]
    assert sorted(names, key=natural_key) == ["bus-3", "car-1", "car-2", "car-10"]


def test_integer_labels_keep_their_values() -> None:
    (codes,), names = encode_labels([np.array([3, 0, 7])], ["f"])
    assert names is None and codes.tolist() == [3, 0, 7]
    (codes,), _ = encode_labels([np.array([2.0, 1.0])], ["f"])
    assert codes.dtype == np.int64 and codes.tolist() == [2, 1]


def test_string_labels_are_mapped_sorted_and_shared_across_files() -> None:
    a = np.array(["drowsy", "alert"], dtype=object)
    b = np.array(["distracted", "alert"], dtype=object)
    (ca, cb), names = encode_labels([a, b], ["a", "b"])
    assert names == ["alert", "distracted", "drowsy"]
    assert ca.tolist() == [2, 0] and cb.tolist() == [1, 0]


def test_fractional_labels_are_refused_naming_the_line() -> None:
    with pytest.raises(DataError, match=r"d.csv: column 'y': labels must be integer class ids or names; line 3 has"):
        encode_labels([np.array([1.0, 0.5])], ["d.csv: column 'y'"], line_offset=2)


def test_negative_and_missing_labels_are_refused() -> None:
    with pytest.raises(DataError, match="non-negative; row 1"):
        encode_labels([np.array([0, -1])], ["f"])
    with pytest.raises(DataError, match="missing label at row 1"):
        encode_labels([np.array(["a", None], dtype=object)], ["f"])


def test_client_ids_as_strings_and_numbers() -> None:
    owner, names = encode_ids(np.array(["car-10", "car-2", "car-10"], dtype=object), "f")
    assert names == ["car-2", "car-10"] and owner.tolist() == [1, 0, 1]
    owner, names = encode_ids(np.array([205, 3, 101]), "f")
    assert names == ["3", "101", "205"] and owner.tolist() == [2, 0, 1]
    assert mapping(names) == {"0": "3", "1": "101", "2": "205"}


@given(st.lists(st.integers(0, 5), min_size=1, max_size=40))
def test_group_rows_covers_every_row_once_in_order(owner_list: list[int]) -> None:
    owner = np.asarray(owner_list, dtype=np.int64)
    parts = group_rows(owner, 6)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(owner)))
    for k, part in enumerate(parts):
        assert part.tolist() == np.flatnonzero(owner == k).tolist()
