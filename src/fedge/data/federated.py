"""A federation's data kept compact: shared arrays plus per-client index ranges.

Nothing per client is materialised up front; :meth:`FederatedDataset.client` slices
views on demand, so a 100,000-client federation costs a few index arrays, not 100,000
objects with tensors of their own.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.clients.base import ClientData
from fedge.core.errors import DataError

Index = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Ragged:
    """Index lists in CSR form: client ``k`` owns ``values[offsets[k]:offsets[k+1]]``."""

    values: Index
    offsets: Index

    @classmethod
    def from_lists(cls, lists: Sequence[npt.ArrayLike]) -> Ragged:
        arrays = [np.asarray(a, dtype=np.int64).ravel() for a in lists]
        sizes = np.array([len(a) for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        values = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        return cls(values=values.astype(np.int64), offsets=offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k: int) -> Index:
        return self.values[self.offsets[k] : self.offsets[k + 1]]

    def sizes(self) -> Index:
        return np.diff(self.offsets)


@dataclass
class FederatedDataset:
    """Features and labels of all clients, plus each client's train/test index lists.

    ``x_central``/``y_central`` is the held-out set for centralised evaluation; when not
    given it is the union of the clients' test parts. ``client_names[k]`` and
    ``label_names[c]`` are the original names of client ``k`` and class ``c`` when the data
    named them (``car-00``, ``drowsy``); the run folder records them.
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    train: Ragged
    test: Ragged
    num_classes: int
    name: str = "custom"
    x_central: npt.NDArray[np.float32] | None = None
    y_central: npt.NDArray[np.int64] | None = None
    client_names: list[str] | None = None
    label_names: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(f"{self.name}: {len(self.x)} feature rows but {len(self.y)} labels")
        if len(self.train) != len(self.test):
            raise DataError(f"{self.name}: train and test index lists differ in client count")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.num_classes):
            raise DataError(f"{self.name}: labels must lie in [0, {self.num_classes})")
        if self.client_names is not None and len(self.client_names) != len(self.train):
            raise DataError(f"{self.name}: {len(self.client_names)} client names for {len(self.train)} clients")
        if self.label_names is not None and len(self.label_names) != self.num_classes:
            raise DataError(f"{self.name}: {len(self.label_names)} label names for {self.num_classes} classes")

    @property
    def num_clients(self) -> int:
        return len(self.train)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def client(self, k: int) -> ClientData:
        """Client ``k``'s arrays, gathered from the shared ones when first read (:class:`SharedRows`)."""
        if not 0 <= k < self.num_clients:
            raise DataError(f"unknown client {k}: the federation has clients 0..{self.num_clients - 1}")
        return SharedRows(self, k)

    def num_examples(self) -> Index:
        return self.train.sizes()

    def central(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        if self.x_central is not None and self.y_central is not None:
            return self.x_central, self.y_central
        idx = self.test.values
        return self.x[idx], self.y[idx]

    def label_histogram(self) -> npt.NDArray[np.int64]:
        """``(num_clients, num_classes)`` counts of training labels: the partition's skew."""
        out = np.zeros((self.num_clients, self.num_classes), dtype=np.int64)
        owner = np.repeat(np.arange(self.num_clients), self.train.sizes())
        np.add.at(out, (owner, self.y[self.train.values]), 1)
        return out


class SharedRows(ClientData):
    """One client's :class:`ClientData` as rows of its federation's shared arrays.

    Each array is gathered the first time it is read, so a backend that trains a whole bucket
    of clients at once gathers their rows in one operation from :attr:`source`
    (``source.train[k]``) instead of once per client; a client whose test arrays nobody reads
    never copies them. It pickles as the plain :class:`ClientData` it stands for, not with the
    whole federation.
    """

    def __init__(self, source: FederatedDataset, k: int) -> None:  # not ClientData's: nothing is gathered yet
        self.source, self.k = source, k

    @functools.cached_property
    def x_train(self) -> npt.NDArray[np.generic]:  # type: ignore[override]
        return self.source.x[self.source.train[self.k]]

    @functools.cached_property
    def y_train(self) -> npt.NDArray[np.int64]:  # type: ignore[override]
        return self.source.y[self.source.train[self.k]]

    @functools.cached_property
    def x_test(self) -> npt.NDArray[np.generic] | None:  # type: ignore[override]
        return self.source.x[self.source.test[self.k]]

    @functools.cached_property
    def y_test(self) -> npt.NDArray[np.int64] | None:  # type: ignore[override]
        return self.source.y[self.source.test[self.k]]

    @property
    def num_train(self) -> int:  # read several times per client in a batched round: offsets, not a view
        return int(self.source.train.offsets[self.k + 1] - self.source.train.offsets[self.k])

    @property
    def num_test(self) -> int:
        return int(self.source.test.offsets[self.k + 1] - self.source.test.offsets[self.k])

    def __reduce__(self) -> tuple[type[ClientData], tuple[Any, ...]]:
        return ClientData, (self.x_train, self.y_train, self.x_test, self.y_test)


def shared_rows(datas: Sequence[ClientData]) -> tuple[FederatedDataset, Index] | None:
    """The one federation all of ``datas`` are rows of and their training rows stacked
    ``(clients, n)`` (None unless every one is a :class:`SharedRows` of one federation, of equal size)."""
    first = datas[0] if datas else None
    if not isinstance(first, SharedRows):
        return None
    src = first.source
    if not all(isinstance(d, SharedRows) and d.source is src for d in datas):
        return None
    rows = [src.train[d.k] for d in datas if isinstance(d, SharedRows)]
    if any(len(r) != len(rows[0]) for r in rows):
        return None
    return src, np.stack(rows)


def split_local(
    parts: Sequence[npt.NDArray[np.int64]], test_fraction: float, rng: np.random.Generator
) -> tuple[Ragged, Ragged]:
    """Shuffle each client's indices and split them into train and test parts.

    A client keeps at least one training example; ``test_fraction = 0`` gives empty test parts.
    """
    if not 0 <= test_fraction < 1:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    train, test = [], []
    for part in parts:
        p = rng.permutation(np.asarray(part, dtype=np.int64))
        n_test = min(round(len(p) * test_fraction), max(len(p) - 1, 0))
        train.append(p[n_test:])
        test.append(p[:n_test])
    return Ragged.from_lists(train), Ragged.from_lists(test)
