"""The W2 scale workload: many small clients drawn from one shared linear model.

One generator for everyone (the IID variant of the Synthetic data of Li et al.,
"Federated Optimization in Heterogeneous Networks", MLSys 2020): ``W ~ N(0, 1)``
(60×10), ``b ~ N(0, 1)``, ``x ~ N(0, Σ)`` with ``Σ_jj = j^-1.2``, label
``argmax(x W + b)``. Client ``k`` owns rows ``[k m, (k+1) m)`` of one shared array, so a
federation of 100,000 clients is two arrays and two offset vectors, not 100,000 objects.
"""

from __future__ import annotations

import numpy as np

from fedge.core.errors import DataError
from fedge.data.federated import FederatedDataset, Ragged

DIM = 60
CLASSES = 10


def _draw(w: np.ndarray, b: np.ndarray, sd: np.ndarray, n: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = (rng.standard_normal((n, DIM), dtype=np.float32) * sd).astype(np.float32)
    y = np.argmax(x @ w + b, axis=1).astype(np.int64)
    return x, y


def w2(num_clients: int, *, samples_per_client: int = 20, test_size: int = 5000,
       seed: int = 0) -> FederatedDataset:
    """The W2 federation: ``num_clients`` × ``samples_per_client`` rows plus a held-out test set."""
    if num_clients < 1 or samples_per_client < 1 or test_size < 0:
        raise DataError(
            f"w2 needs num_clients >= 1 and samples_per_client >= 1 (got {num_clients}, "
            f"{samples_per_client}) and test_size >= 0 (got {test_size})"
        )
    rng = np.random.default_rng([seed, 0x3302])
    w = rng.standard_normal((DIM, CLASSES)).astype(np.float32)
    b = rng.standard_normal(CLASSES).astype(np.float32)
    sd = np.power(np.arange(1, DIM + 1, dtype=np.float64), -1.2 / 2).astype(np.float32)
    x, y = _draw(w, b, sd, num_clients * samples_per_client, rng)
    x_test, y_test = _draw(w, b, sd, test_size, rng)
    total = num_clients * samples_per_client
    train = Ragged(values=np.arange(total, dtype=np.int64),
                   offsets=np.arange(0, total + 1, samples_per_client, dtype=np.int64))
    test = Ragged(values=np.zeros(0, dtype=np.int64), offsets=np.zeros(num_clients + 1, dtype=np.int64))
    return FederatedDataset(x=x, y=y, train=train, test=test, num_classes=CLASSES, name="w2",
                            x_central=x_test, y_central=y_test)
