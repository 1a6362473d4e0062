"""Partitioners: split sample indices among clients; every index lands in exactly one client.

* :func:`iid` — uniform random, equal sizes (±1).
* :func:`dirichlet` — label skew, per-class proportions ~ Dir(α) (Hsu et al. 2019).
* :func:`shards` — sort by label, cut into shards, ``k`` shards per client (McMahan et al. 2017).
* :func:`powerlaw` — quantity skew, client sizes from a power law (Li et al. 2020's LEAF-like skew).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedge.core.errors import DataError

Parts = list[npt.NDArray[np.int64]]


def _check(n: int, num_clients: int) -> None:
    if num_clients < 1:
        raise DataError(f"num_clients must be >= 1, got {num_clients}")
    if n < num_clients:
        raise DataError(f"cannot give {num_clients} clients at least one of only {n} samples")


def iid(n: int, num_clients: int, rng: np.random.Generator) -> Parts:
    _check(n, num_clients)
    return [np.sort(p).astype(np.int64) for p in np.array_split(rng.permutation(n), num_clients)]


def dirichlet(
    labels: npt.NDArray[np.int64],
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_size: int = 2,
    max_tries: int = 1000,
) -> Parts:
    """Per class, split its indices among clients in proportions drawn from Dir(α).

    Draws again (up to ``max_tries``) until every client holds ``min_size`` samples.
    """
    if not alpha > 0:
        raise DataError(f"dirichlet alpha must be positive, got {alpha}")
    n = len(labels)
    _check(n, num_clients)
    if n < num_clients * min_size:
        raise DataError(f"{n} samples cannot give {num_clients} clients {min_size} each")
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    for _ in range(max_tries):
        parts: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            props = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(props) * len(idx)).astype(np.int64)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise DataError(
        f"dirichlet(alpha={alpha}) could not give all {num_clients} clients {min_size} samples "
        f"in {max_tries} draws; raise alpha or lower num_clients"
    )


def shards(
    labels: npt.NDArray[np.int64],
    num_clients: int,
    shards_per_client: int,
    rng: np.random.Generator,
) -> Parts:
    n = len(labels)
    if shards_per_client < 1:
        raise DataError(f"shards_per_client must be >= 1, got {shards_per_client}")
    total = num_clients * shards_per_client
    _check(n, total)
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, total)
    assignment = rng.permutation(total).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row])).astype(np.int64) for row in assignment]


def powerlaw(n: int, num_clients: int, rng: np.random.Generator, *, exponent: float = 1.5) -> Parts:
    """Client sizes proportional to Pareto(exponent) draws; each client gets at least one sample."""
    _check(n, num_clients)
    if not exponent > 0:
        raise DataError(f"powerlaw exponent must be positive, got {exponent}")
    weights = rng.pareto(exponent, size=num_clients) + 1.0
    extra = n - num_clients
    sizes = np.floor(weights / weights.sum() * extra).astype(np.int64)
    sizes[np.argsort(-weights)[: extra - int(sizes.sum())]] += 1
    sizes += 1
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(p).astype(np.int64) for p in np.split(rng.permutation(n), cuts)]


PARTITIONERS = ("iid", "dirichlet", "shards", "powerlaw")
