"""A client's data as rows of its federation's shared arrays, gathered when first read."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fedge.clients.base import ClientData
from fedge.data.federated import FederatedDataset, Ragged, SharedRows, shared_rows


def federation() -> FederatedDataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=40)
    train = Ragged.from_lists([[5, 1, 9], [0, 2, 4], [7, 8, 3], [10, 11]])
    test = Ragged.from_lists([[20], [21, 22], [], [23]])
    return FederatedDataset(x, y, train, test, num_classes=4)


def test_a_clients_rows_are_its_index_lists_gathered() -> None:
    ds = federation()
    for k in range(ds.num_clients):
        d = ds.client(k)
        assert isinstance(d, SharedRows) and "x_train" not in vars(d)  # nothing gathered yet
        assert d.num_train == len(ds.train[k]) and d.num_test == len(ds.test[k])
        np.testing.assert_array_equal(d.x_train, ds.x[ds.train[k]])
        np.testing.assert_array_equal(d.y_train, ds.y[ds.train[k]])
        np.testing.assert_array_equal(d.x_test, ds.x[ds.test[k]])
        np.testing.assert_array_equal(d.y_test, ds.y[ds.test[k]])
    with pytest.raises(Exception, match="unknown client 4"):
        ds.client(4)


def test_it_pickles_as_the_plain_client_data_not_the_federation() -> None:
    ds = federation()
    back = pickle.loads(pickle.dumps(ds.client(1)))
    assert type(back) is ClientData
    np.testing.assert_array_equal(back.x_train, ds.x[[0, 2, 4]])
    np.testing.assert_array_equal(back.y_test, ds.y[[21, 22]])
    assert len(pickle.dumps(ds.client(1))) < len(pickle.dumps(ds))


def test_equal_sized_clients_of_one_federation_stack_their_rows() -> None:
    ds = federation()
    got = shared_rows([ds.client(0), ds.client(1), ds.client(2)])
    assert got is not None and got[0] is ds
    np.testing.assert_array_equal(got[1], [[5, 1, 9], [0, 2, 4], [7, 8, 3]])
    assert shared_rows([ds.client(0), ds.client(3)]) is None  # sizes differ
    assert shared_rows([ds.client(0), federation().client(1)]) is None  # two federations
    plain = ClientData(ds.x[:3], ds.y[:3])
    assert shared_rows([plain, ds.client(0)]) is None and shared_rows([]) is None
