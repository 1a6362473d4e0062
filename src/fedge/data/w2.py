"""The W2 scale workload: many small clients drawn from one shared linear model.

One generator for everyone (the IID variant of the Synthetic data of Li et al.,
"Federated Optimization in Heterogeneous Networks", MLSys 2020): ``W ~ N(0, 1)``
(60×10), ``b ~ N(0, 1)``, ``x ~ N(0, Σ)`` with ``Σ_jj = j^-1.2``, label
``argmax(x W + b)``. Client ``k`` owns rows ``[k m, (k+1) m)`` of one shared array, so a
federation of 100,000 clients is two arrays and two offset vectors, not 100,000 objects.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fedge.core.errors import DataError
from fedge.data.federated import FederatedDataset, Ragged

DIM = 60
CLASSES = 10


BLOCK = 1 << 16
"""Rows drawn per generator: blocks are filled in parallel threads, the result does not
depend on how many threads there are."""


def _draw(
    w: np.ndarray, b: np.ndarray, sd: np.ndarray, n: int, seed: np.random.SeedSequence
) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((n, DIM), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    starts = range(0, n, BLOCK)
    seeds = seed.spawn(len(starts))

    def fill(i: int) -> None:
        rows = slice(starts[i], min(starts[i] + BLOCK, n))
        xb = x[rows]
        np.random.default_rng(seeds[i]).standard_normal(out=xb, dtype=np.float32)
        xb *= sd
        y[rows] = np.argmax(xb @ w + b, axis=1)

    with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1) or 1) as pool:
        list(pool.map(fill, range(len(starts))))
    return x, y


def w2_model(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shared generator of :func:`w2`: ``W`` (60×10), ``b`` (10) and the feature std ``Σ_jj^½``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x3302]).spawn(3)[0])
    w = rng.standard_normal((DIM, CLASSES)).astype(np.float32)
    b = rng.standard_normal(CLASSES).astype(np.float32)
    sd = np.power(np.arange(1, DIM + 1, dtype=np.float64), -1.2 / 2).astype(np.float32)
    return w, b, sd


def w2(num_clients: int, *, samples_per_client: int = 20, test_size: int = 5000, seed: int = 0) -> FederatedDataset:
    """The W2 federation: ``num_clients`` × ``samples_per_client`` rows plus a held-out test set."""
    if num_clients < 1 or samples_per_client < 1 or test_size < 0:
        raise DataError(
            f"w2 needs num_clients >= 1 and samples_per_client >= 1 (got {num_clients}, "
            f"{samples_per_client}) and test_size >= 0 (got {test_size})"
        )
    train_seed, test_seed = np.random.SeedSequence([seed, 0x3302]).spawn(3)[1:]
    w, b, sd = w2_model(seed)
    x, y = _draw(w, b, sd, num_clients * samples_per_client, train_seed)
    x_test, y_test = _draw(w, b, sd, test_size, test_seed)
    total = num_clients * samples_per_client
    train = Ragged(
        values=np.arange(total, dtype=np.int64), offsets=np.arange(0, total + 1, samples_per_client, dtype=np.int64)
    )
    test = Ragged(values=np.zeros(0, dtype=np.int64), offsets=np.zeros(num_clients + 1, dtype=np.int64))
    return FederatedDataset(
        x=x, y=y, train=train, test=test, num_classes=CLASSES, name="w2", x_central=x_test, y_central=y_test
    )
