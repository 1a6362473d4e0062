"""Built-in datasets: digits and FedProx's Synthetic(α, β)."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.core.errors import DataError
from fedge.data import digits, synthetic


def test_digits_federation() -> None:
    fd = digits(num_clients=100, alpha=0.5, seed=0)
    assert fd.num_clients == 100 and fd.num_classes == 10
    assert fd.x.shape == (1797, 64) and fd.x.dtype == np.float32
    assert fd.x.min() >= 0.0 and fd.x.max() <= 1.0
    allidx = np.concatenate([fd.train.values, fd.test.values])
    assert np.array_equal(np.sort(allidx), np.arange(1797))
    _, yc = fd.central()
    assert 0.15 < len(yc) / 1797 < 0.25
    hist = fd.label_histogram()
    assert hist.shape == (100, 10) and hist.sum() == len(fd.train.values)


def test_synthetic_recipe() -> None:
    fd = synthetic(1.0, 1.0, num_clients=30, seed=3)
    assert fd.num_clients == 30 and fd.feature_shape == (60,) and fd.num_classes == 10
    sizes = fd.train.sizes() + fd.test.sizes()
    assert sizes.min() >= 50
    # per device 90/10 split
    for k in range(30):
        assert abs(len(fd.test[k]) - round(0.1 * sizes[k])) <= 1


def test_synthetic_is_seeded_and_heterogeneous() -> None:
    a = synthetic(1.0, 1.0, num_clients=5, seed=1)
    b = synthetic(1.0, 1.0, num_clients=5, seed=1)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    het = synthetic(1.0, 1.0, num_clients=10, seed=2)
    iid = synthetic(1.0, 1.0, num_clients=10, iid=True, seed=2)

    def spread_of_means(fd) -> float:
        return float(np.std([fd.x[fd.train[k]].mean() for k in range(fd.num_clients)]))

    assert spread_of_means(het) > 3 * spread_of_means(iid)


def test_synthetic_bad_args() -> None:
    with pytest.raises(DataError):
        synthetic(-1.0, 1.0)


def test_unknown_client_is_a_clear_error() -> None:
    fd = synthetic(0.0, 0.0, num_clients=3, seed=0)
    with pytest.raises(DataError, match="unknown client 5"):
        fd.client(5)


def test_digits_are_read_from_the_file_scikit_learn_ships_without_importing_it() -> None:
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from fedge.data.datasets import load_digits_arrays

    x, y = load_digits_arrays()
    bunch = load_digits()
    np.testing.assert_array_equal(x, (bunch.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, bunch.target)
    assert x.dtype == np.float32 and y.dtype == np.int64
    code = (
        "import sys; from fedge.data.datasets import load_digits_arrays; "
        "x, y = load_digits_arrays(); print(len(y), 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1797", "False"]
