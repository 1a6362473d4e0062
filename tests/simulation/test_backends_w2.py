"""The W2 scale federation the backends are benchmarked on: compact, seeded, checked."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.core.errors import DataError
from fedge.data.w2 import BLOCK, DIM, w2, w2_model


def test_w2_is_two_shared_arrays_and_offsets() -> None:
    data = w2(1000, samples_per_client=20, test_size=50, seed=1)
    assert data.x.shape == (20_000, DIM) and data.x.dtype == np.float32
    assert data.train.offsets.shape == (1001,)
    np.testing.assert_array_equal(data.num_examples(), np.full(1000, 20))
    client = data.client(7)
    np.testing.assert_array_equal(client.x_train, data.x[140:160])
    assert client.num_test == 0
    assert data.central()[0].shape == (50, DIM)


def test_w2_is_seeded_and_independent_of_block_layout() -> None:
    n = BLOCK // 20 + 3  # spans two generator blocks
    a, b = w2(n, seed=4, test_size=10), w2(n, seed=4, test_size=10)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, w2(n, seed=5, test_size=10).x)
    assert len(np.unique(a.y)) > 1


def test_w2_labels_come_from_one_linear_model() -> None:
    """Every label is argmax(x W + b) of the one shared model; features have std j^-0.6."""
    data = w2(500, samples_per_client=20, test_size=200, seed=2)
    w, b, sd = w2_model(2)
    np.testing.assert_array_equal(data.y, np.argmax(data.x @ w + b, axis=1))
    assert data.y_central is not None and data.x_central is not None
    np.testing.assert_array_equal(data.y_central, np.argmax(data.x_central @ w + b, axis=1))
    np.testing.assert_allclose(data.x.std(axis=0), sd, rtol=0.05)


def test_w2_rejects_an_empty_federation() -> None:
    with pytest.raises(DataError, match="num_clients >= 1"):
        w2(0)
