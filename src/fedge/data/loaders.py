"""Loaders for users' own data: CSV, Parquet and ``.npz``.

Two layouts are understood:

* one file with a client-id column (``client_column``): each distinct id is a client;
* a folder with one file per client (sorted by file name).

Without a client column, the rows are pooled and partitioned like a built-in dataset.
Every problem (missing file, missing column, NaN, non-numeric value) is a one-line
:class:`DataError` naming the file and the column or row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import DataError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}

Table = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64] | None]


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


def _frame_to_arrays(frame: Any, path: Path, label: str, client: str | None) -> Table:
    for col in (label, client):
        if col is not None and col not in frame.columns:
            raise DataError(f"{path}: no column {col!r} (columns: {', '.join(map(str, frame.columns))})")
    feature_cols = [c for c in frame.columns if c not in (label, client)]
    if not feature_cols:
        raise DataError(f"{path}: no feature columns besides {label!r}")
    import pandas as pd

    for col in [*feature_cols, label]:
        series = frame[col]
        if not pd.api.types.is_numeric_dtype(series):
            coerced = pd.to_numeric(series, errors="coerce")
            bad = np.flatnonzero((coerced.isna() & series.notna()).to_numpy())
            row = int(bad[0]) + 2 if len(bad) else "?"
            raise DataError(f"{path}: column {col!r} is not numeric (first bad value at line {row})")
        nan_rows = np.flatnonzero(series.isna().to_numpy())
        if len(nan_rows):
            raise DataError(f"{path}: column {col!r} has a missing or NaN value at line {nan_rows[0] + 2}")
    x = frame[feature_cols].to_numpy(dtype=np.float32)
    y_raw = frame[label].to_numpy()
    if not np.all(np.equal(np.mod(y_raw, 1), 0)) or np.any(y_raw < 0):
        raise DataError(f"{path}: labels in {label!r} must be non-negative integers")
    cids = frame[client].to_numpy().astype(np.int64) if client else None
    return x, y_raw.astype(np.int64), cids


def _read_npz(path: Path, label: str, client: str | None) -> Table:
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
    if not np.all(np.isfinite(x)):
        row = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
        raise DataError(f"{path}: 'x' has a NaN or infinite value in row {row}")
    cids = None
    if client is not None:
        if client not in arrays:
            raise DataError(f"{path}: no array {client!r}")
        cids = arrays[client].astype(np.int64)
    return x.astype(np.float32), y.astype(np.int64), cids


def read_table(path: Path, *, label: str = "label", client: str | None = None) -> Table:
    """Features, labels and (optionally) client ids from one CSV, Parquet or ``.npz`` file."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown format {path.suffix!r}; use {', '.join(FORMATS)}")
    if fmt == "npz":
        return _read_npz(path, label, client)
    return _frame_to_arrays(_read_frame(path), path, label, client)


def load_files(
    path: str | Path, *, label: str = "label", client: str | None = None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], list[npt.NDArray[np.int64]] | None]:
    """Pooled ``(x, y)`` and, when the layout says who owns what, each client's index list."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in FORMATS)
        if not files:
            raise DataError(f"{p}: no {', '.join(FORMATS)} files in this folder")
        xs: list[npt.NDArray[np.float32]] = []
        ys: list[npt.NDArray[np.int64]] = []
        parts: list[npt.NDArray[np.int64]] = []
        start = 0
        for f in files:
            x, y, _ = read_table(f, label=label)
            if xs and x.shape[1:] != xs[0].shape[1:]:
                raise DataError(f"{f}: {x.shape[1:]} features, but {files[0]} has {xs[0].shape[1:]}")
            xs.append(x)
            ys.append(y)
            parts.append(np.arange(start, start + len(y), dtype=np.int64))
            start += len(y)
        return np.concatenate(xs), np.concatenate(ys), parts
    x, y, cids = read_table(p, label=label, client=client)
    if cids is None:
        return x, y, None
    ids = np.unique(cids)
    return x, y, [np.flatnonzero(cids == c).astype(np.int64) for c in ids]
