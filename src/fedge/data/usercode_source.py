"""Clients' data from the user's own loader: ``[data] loader = "package.module:load_client"``.

The loader is called once per client as ``load_client(client_id, num_clients, seed)`` (it
may accept any subset of those keyword names) and returns that client's data as

- ``(x_train, y_train)`` or ``(x_train, y_train, x_test, y_test)`` NumPy arrays, or
- a torch ``Dataset`` of ``(features, label)`` items (all of it is training data), or a
  pair ``(train_dataset, test_dataset)``.

Labels are integer class ids from 0. The central test set is ``[data] test_loader``'s
``(x, y)`` when set (called with ``num_clients`` and ``seed``), otherwise the union of the
clients' test parts. A deployed node calls the same loader with its own client id only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ConfigError, DataError
from fedge.data.federated import FederatedDataset, Ragged

MAX_ITEMS = 1_000_000
"""The most items read from one torch ``Dataset`` (a bound against endless datasets)."""

Arrays = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]]


def _labels(y: Any, spec: str) -> npt.NDArray[np.int64]:
    arr = np.asarray(y)
    whole = np.issubdtype(arr.dtype, np.integer) or (
        np.issubdtype(arr.dtype, np.floating) and bool(np.all(np.equal(np.mod(arr, 1), 0)))
    )
    if arr.size and not whole:
        raise DataError(f"data.loader: {spec} returned {arr.dtype} labels; labels must be integer class ids")
    out = arr.astype(np.int64).ravel()
    if out.size and out.min() < 0:
        raise DataError(f"data.loader: {spec} returned negative labels; labels must be class ids from 0")
    return out


def dataset_arrays(ds: Any, spec: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Read a torch ``Dataset`` of ``(features, label)`` items into arrays (at most :data:`MAX_ITEMS`)."""
    try:
        n = len(ds)
    except TypeError:
        raise DataError(f"data.loader: {spec} returned a dataset without len()") from None
    if n > MAX_ITEMS:
        raise DataError(f"data.loader: {spec} returned {n} items for one client; at most {MAX_ITEMS} are read")
    xs, ys = [], []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise DataError(f"data.loader: {spec}: dataset item {i} is not a (features, label) pair")
        feats, label = item
        xs.append(np.asarray(feats.numpy() if hasattr(feats, "numpy") else feats, dtype=np.float32))
        ys.append(int(label.item() if hasattr(label, "item") else label))
    if not xs:
        return np.zeros((0,), dtype=np.float32), np.zeros((0,), dtype=np.int64)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _pair(x: Any, y: Any, spec: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    xa = np.asarray(x, dtype=np.float32)
    ya = _labels(y, spec)
    if len(xa) != len(ya):
        raise DataError(f"data.loader: {spec} returned {len(xa)} feature rows but {len(ya)} labels")
    return xa, ya


def _is_dataset(obj: Any) -> bool:
    """A map-style dataset (torch ``Dataset`` or alike): indexable and sized, but not an array or a list."""
    if isinstance(obj, np.ndarray | tuple | list) or hasattr(obj, "shape"):
        return False
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__")


def client_arrays(out: Any, spec: str) -> Arrays:
    """One client's ``(x_train, y_train, x_test, y_test)`` from whatever its loader returned."""
    if _is_dataset(out):
        x, y = dataset_arrays(out, spec)
        return x, y, x[:0], y[:0]
    if isinstance(out, tuple | list) and len(out) == 2 and all(_is_dataset(o) for o in out):
        (x, y), (xt, yt) = dataset_arrays(out[0], spec), dataset_arrays(out[1], spec)
        return x, y, xt, yt
    if isinstance(out, tuple | list) and len(out) in (2, 4):
        x, y = _pair(out[0], out[1], spec)
        xt, yt = _pair(out[2], out[3], spec) if len(out) == 4 else (x[:0], y[:0])
        return x, y, xt, yt
    raise DataError(
        f"data.loader: {spec} returned a {type(out).__name__}; return (x, y), (x, y, x_test, y_test) or a torch Dataset"
    )


def load_client(spec: str, client_id: int, *, num_clients: int, seed: int) -> Arrays:
    """Call the loader ``spec`` for one client and return its arrays (what a deployed node does)."""
    from fedge.usercode import call, resolve

    fn = resolve(spec, key="data.loader")
    out = call(fn, spec, key="data.loader", client_id=client_id, cid=client_id, num_clients=num_clients, seed=seed)
    return client_arrays(out, spec)


def load_user_dataset(spec: str, *, num_clients: int, seed: int, test_loader: str = "") -> FederatedDataset:
    """Every client's data through the loader ``spec``, as one :class:`FederatedDataset`."""
    clients = [load_client(spec, cid, num_clients=num_clients, seed=seed) for cid in range(num_clients)]
    shape = clients[0][0].shape[1:]
    for cid, (x, _, xt, _) in enumerate(clients):
        if x.shape[1:] != shape or (len(xt) and xt.shape[1:] != shape):
            raise DataError(f"data.loader: client {cid} has features of shape {x.shape[1:]}, client 0 {shape}")
        if not len(x):
            raise DataError(f"data.loader: {spec} returned no training examples for client {cid}")
    xc: npt.NDArray[np.float32] | None = None
    yc: npt.NDArray[np.int64] | None = None
    if test_loader:
        from fedge.usercode import call, resolve

        central = call(
            resolve(test_loader, key="data.test_loader"),
            test_loader,
            key="data.test_loader",
            num_clients=num_clients,
            seed=seed,
        )
        if not isinstance(central, tuple | list) or len(central) != 2:
            raise ConfigError(f"data.test_loader: {test_loader} must return (x, y)")
        xc, yc = _pair(central[0], central[1], test_loader)
    xs = [a for x, _, xt, _ in clients for a in (x, xt)]
    ys = [a for _, y, _, yt in clients for a in (y, yt)]
    sizes = [len(a) for a in xs]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    train = Ragged.from_lists([np.arange(starts[2 * k], starts[2 * k + 1]) for k in range(num_clients)])
    test = Ragged.from_lists([np.arange(starts[2 * k + 1], starts[2 * k + 2]) for k in range(num_clients)])
    y_all = np.concatenate(ys)
    top = max(int(y_all.max()), int(yc.max()) if yc is not None and len(yc) else -1)
    name = spec.partition(":")[0]
    return FederatedDataset(
        x=np.concatenate(xs),
        y=y_all,
        train=train,
        test=test,
        num_classes=top + 1,
        name=name,
        x_central=xc,
        y_central=yc,
    )
