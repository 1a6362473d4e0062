"""Loaders for users' own data: CSV, Parquet and ``.npz``.

Two layouts are understood:

* one file with a client-id column (``client_column``): each distinct id is a client;
* a folder with one file per client (in natural order of file name, ``s-2`` before ``s-10``;
  the file stems name the clients).

Without a client column, the rows are pooled and partitioned like a built-in dataset.
Client ids and labels may be integers or names (``car-00``, ``drowsy``): names are numbered
in natural sorted order (:mod:`fedge.data.names`) and kept in :class:`FileData`.
Every problem (missing file, missing column, NaN, non-numeric value) is a one-line
:class:`DataError` naming the file and the column or row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import DataError
from fedge.data.names import encode_ids, encode_labels, group_rows, natural_key

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
CSV_FIRST_LINE = 2
"""The file line of a CSV's first data row (line 1 is the header)."""

Table = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64] | None]
Raw = tuple[npt.NDArray[np.float32], npt.NDArray[Any], npt.NDArray[Any] | None]


@dataclass
class FileData:
    """What a file or folder holds: pooled arrays, who owns which rows, and the original names.

    ``parts`` is ``None`` when the layout says nothing about clients (pool and partition);
    ``client_names[k]`` is client ``k``'s id in the file (or its file stem), ``label_names[c]``
    the name of class ``c`` when the labels were names.
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    parts: list[npt.NDArray[np.int64]] | None = None
    client_names: list[str] | None = None
    label_names: list[str] | None = None


def _read_frame(path: Path) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DataError(f"{path}: reading CSV/Parquet needs pandas: pip install 'fedge[data]'") from exc
    try:
        if FORMATS[path.suffix.lower()] == "csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except (ValueError, OSError, ImportError) as exc:
        raise DataError(f"{path}: cannot read: {exc}".splitlines()[0]) from None


def _feature_columns(
    columns: Sequence[Any], path: Path, label: str, client: str | None, features: Sequence[str]
) -> list[Any]:
    for col in (label, client, *features):
        if col is not None and col not in columns:
            raise DataError(f"{path}: no column {col!r} (columns: {', '.join(map(str, columns))})")
    chosen = list(features) or [c for c in columns if c not in (label, client)]
    if not chosen:
        raise DataError(f"{path}: no feature columns besides {label!r}")
    return chosen


def _frame_raw(frame: Any, path: Path, label: str, client: str | None, features: Sequence[str]) -> Raw:
    import pandas as pd

    feature_cols = _feature_columns(list(frame.columns), path, label, client, features)
    line = CSV_FIRST_LINE if FORMATS[path.suffix.lower()] == "csv" else 0
    where = "line" if line else "row"
    for col in feature_cols:
        series = frame[col]
        if not pd.api.types.is_numeric_dtype(series):
            coerced = pd.to_numeric(series, errors="coerce")
            bad = np.flatnonzero((coerced.isna() & series.notna()).to_numpy())
            row = int(bad[0]) + line if len(bad) else "?"
            raise DataError(f"{path}: column {col!r} is not numeric (first bad value at {where} {row})")
        nan_rows = np.flatnonzero(series.isna().to_numpy())
        if len(nan_rows):
            raise DataError(f"{path}: column {col!r} has a missing or NaN value at {where} {nan_rows[0] + line}")
    x = frame[feature_cols].to_numpy(dtype=np.float32)
    cids = frame[client].to_numpy() if client else None
    return x, frame[label].to_numpy(), cids


def _npz_raw(path: Path, label: str, client: str | None) -> Raw:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if "x" not in arrays or label not in arrays:
        raise DataError(f"{path}: needs arrays 'x' and {label!r} (has {', '.join(arrays)})")
    x, y = arrays["x"], arrays[label]
    if len(x) != len(y):
        raise DataError(f"{path}: 'x' has {len(x)} rows but {label!r} has {len(y)}")
    if x.dtype.kind not in "iufb":
        raise DataError(f"{path}: 'x' must be numeric, not {x.dtype}")
    if not np.all(np.isfinite(x)):
        row = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
        raise DataError(f"{path}: 'x' has a NaN or infinite value in row {row}")
    cids = None
    if client is not None:
        if client not in arrays:
            raise DataError(f"{path}: no array {client!r}")
        cids = arrays[client]
        if len(cids) != len(x):
            raise DataError(f"{path}: 'x' has {len(x)} rows but {client!r} has {len(cids)}")
    return x.astype(np.float32), y, cids


def _read_raw(path: Path, label: str, client: str | None, features: Sequence[str] = ()) -> Raw:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown format {path.suffix!r}; use {', '.join(FORMATS)}")
    if fmt == "npz":
        if features:
            raise DataError(f"{path}: feature columns do not apply to .npz files (features are the array 'x')")
        return _npz_raw(path, label, client)
    return _frame_raw(_read_frame(path), path, label, client, features)


def _line_offset(path: Path) -> int | None:
    return CSV_FIRST_LINE if FORMATS.get(path.suffix.lower()) == "csv" else None


def read_table(path: Path, *, label: str = "label", client: str | None = None, features: Sequence[str] = ()) -> Table:
    """Features, labels and (optionally) client indices from one CSV, Parquet or ``.npz`` file.

    Label and client names are numbered as in :func:`read_files`; use that to keep the names.
    """
    data = read_files(path, label=label, client=client, features=features)
    if data.parts is None:
        return data.x, data.y, None
    owner = np.empty(len(data.y), dtype=np.int64)
    for k, part in enumerate(data.parts):
        owner[part] = k
    return data.x, data.y, owner


def _read_folder(p: Path, label: str, features: Sequence[str]) -> FileData:
    files = sorted((f for f in p.iterdir() if f.suffix.lower() in FORMATS), key=lambda f: natural_key(f.name))
    if not files:
        raise DataError(f"{p}: no {', '.join(FORMATS)} files in this folder")
    xs: list[npt.NDArray[np.float32]] = []
    raw_labels: list[npt.NDArray[Any]] = []
    for f in files:
        x, y, _ = _read_raw(f, label, None, features)
        if not len(y):
            raise DataError(f"{f}: no rows; every file of the folder is one client and needs data")
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise DataError(f"{f}: {x.shape[1:]} features, but {files[0]} has {xs[0].shape[1:]}")
        xs.append(x)
        raw_labels.append(y)
    offsets = [_line_offset(f) for f in files]
    codes, label_names = encode_labels(
        raw_labels,
        [f"{f}: column {label!r}" for f in files],
        line_offset=offsets[0] if len(set(offsets)) == 1 else None,
    )
    bounds = np.cumsum([0] + [len(c) for c in codes])
    parts = [np.arange(bounds[k], bounds[k + 1], dtype=np.int64) for k in range(len(files))]
    return FileData(np.concatenate(xs), np.concatenate(codes), parts, [f.stem for f in files], label_names)


def read_files(
    path: str | Path, *, label: str = "label", client: str | None = None, features: Sequence[str] = ()
) -> FileData:
    """Read one file, or a folder of one file per client, with ids and labels mapped to indices."""
    p = Path(path)
    if p.is_dir():
        return _read_folder(p, label, features)
    x, y_raw, cids_raw = _read_raw(p, label, client, features)
    offset = _line_offset(p)
    (y,), label_names = encode_labels([y_raw], [f"{p}: column {label!r}"], line_offset=offset)
    if cids_raw is None:
        return FileData(x, y, label_names=label_names)
    owner, client_names = encode_ids(cids_raw, f"{p}: column {client!r}", line_offset=offset)
    return FileData(x, y, group_rows(owner, len(client_names)), client_names, label_names)


def load_files(
    path: str | Path, *, label: str = "label", client: str | None = None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], list[npt.NDArray[np.int64]] | None]:
    """Pooled ``(x, y)`` and, when the layout says who owns what, each client's index list."""
    data = read_files(path, label=label, client=client)
    return data.x, data.y, data.parts
