"""Built-in datasets: scikit-learn's bundled handwritten digits and FedProx's Synthetic(α, β).

Nothing is downloaded: digits ships inside scikit-learn, Synthetic is generated.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedge.core.errors import DataError
from fedge.data import partition as P
from fedge.data.federated import FederatedDataset, Ragged, split_local

SYN_DIM = 60
SYN_CLASSES = 10


DIGITS_FILE = "sklearn/datasets/data/digits.csv.gz"
"""Where scikit-learn's distribution ships the digits (64 pixel columns, then the label)."""


def load_digits_arrays() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The 1,797 8×8 digits as 64 features scaled to [0, 1], and their labels.

    The file is read straight from the installed scikit-learn distribution, without
    importing scikit-learn (about 1–2 s of a default run's start-up); where the file is
    not found there, scikit-learn's own loader reads it.
    """
    import gzip
    import os
    from importlib import metadata

    try:
        path = str(metadata.distribution("scikit-learn").locate_file(DIGITS_FILE))
    except metadata.PackageNotFoundError:
        path = ""
    if path and os.path.isfile(path):
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
        data, target = table[:, :-1], table[:, -1]
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DataError("the digits dataset needs scikit-learn: pip install 'fedge[data]'") from exc
        bunch = load_digits()
        data, target = bunch.data, bunch.target
    return (data / 16.0).astype(np.float32), target.astype(np.int64)


def partition_indices(
    labels: npt.NDArray[np.int64],
    num_clients: int,
    scheme: str,
    rng: np.random.Generator,
    *,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    exponent: float = 1.5,
) -> P.Parts:
    n = len(labels)
    if scheme == "iid":
        return P.iid(n, num_clients, rng)
    if scheme == "dirichlet":
        return P.dirichlet(labels, num_clients, alpha, rng)
    if scheme == "shards":
        return P.shards(labels, num_clients, shards_per_client, rng)
    if scheme == "powerlaw":
        return P.powerlaw(n, num_clients, rng, exponent=exponent)
    raise DataError(f"unknown partition {scheme!r}; valid: {', '.join(P.PARTITIONERS)}")


def federate(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    *,
    num_clients: int,
    scheme: str,
    test_fraction: float,
    rng: np.random.Generator,
    name: str,
    num_classes: int | None = None,
    **kwargs: float,
) -> FederatedDataset:
    """Partition one pooled dataset among clients, then split each client's part train/test."""
    parts = partition_indices(y, num_clients, scheme, rng, **kwargs)  # type: ignore[arg-type]
    train, test = split_local(parts, test_fraction, rng)
    return FederatedDataset(x=x, y=y, train=train, test=test, num_classes=num_classes or int(y.max()) + 1, name=name)


def digits(
    *,
    num_clients: int = 100,
    scheme: str = "dirichlet",
    alpha: float = 0.5,
    test_fraction: float = 0.2,
    seed: int = 0,
    **kwargs: float,
) -> FederatedDataset:
    x, y = load_digits_arrays()
    return federate(
        x,
        y,
        num_clients=num_clients,
        scheme=scheme,
        test_fraction=test_fraction,
        rng=np.random.default_rng(seed),
        name="digits",
        num_classes=10,
        alpha=alpha,
        **kwargs,
    )


def synthetic(
    alpha: float = 1.0,
    beta: float = 1.0,
    *,
    num_clients: int = 30,
    iid: bool = False,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> FederatedDataset:
    """FedProx's Synthetic(α, β) (Li et al., MLSys 2020), recipe of BENCHMARKS.md W1.

    Device ``k`` has ``int(lognormal(4, 2)) + 50`` samples, its own softmax model
    ``W_k, b_k ~ N(u_k, 1)`` with ``u_k ~ N(0, α)``, and inputs ``x ~ N(v_k, Σ)`` with
    ``v_k ~ N(B_k, 1)``, ``B_k ~ N(0, β)``, ``Σ_jj = j^-1.2``. The IID variant shares one
    ``W, b ~ N(0, 1)`` and ``x ~ N(0, Σ)``.
    """
    if alpha < 0 or beta < 0:
        raise DataError(f"synthetic alpha and beta must be >= 0, got {alpha}, {beta}")
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(4, 2, num_clients).astype(np.int64) + 50
    u = rng.normal(0, alpha, num_clients)
    big_b = rng.normal(0, beta, num_clients)
    sd = np.sqrt(np.arange(1, SYN_DIM + 1, dtype=np.float64) ** -1.2)
    w_iid = rng.normal(0, 1, (SYN_DIM, SYN_CLASSES))
    b_iid = rng.normal(0, 1, SYN_CLASSES)
    xs, ys, parts = [], [], []
    start = 0
    for k in range(num_clients):
        if iid:
            w, b, v = w_iid, b_iid, np.zeros(SYN_DIM)
        else:
            w = rng.normal(u[k], 1, (SYN_DIM, SYN_CLASSES))
            b = rng.normal(u[k], 1, SYN_CLASSES)
            v = rng.normal(big_b[k], 1, SYN_DIM)
        xk = v + sd * rng.standard_normal((int(sizes[k]), SYN_DIM))
        yk = np.argmax(xk @ w + b, axis=1)  # argmax of softmax == argmax of logits
        xs.append(xk.astype(np.float32))
        ys.append(yk.astype(np.int64))
        parts.append(np.arange(start, start + len(yk), dtype=np.int64))
        start += len(yk)
    train, test = split_local(parts, test_fraction, rng)
    return FederatedDataset(
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        train=train,
        test=test,
        num_classes=SYN_CLASSES,
        name=f"synthetic({alpha},{beta})" + ("-iid" if iid else ""),
    )


__all__ = ["Ragged", "digits", "federate", "load_digits_arrays", "partition_indices", "synthetic"]
