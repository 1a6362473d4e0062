"""Labels and client ids as users' files hold them: integers, or names mapped to 0..N-1.

Integer labels keep their values. Names (``alert``, ``drowsy``; ``car-00``, ``car-01``) are
numbered in *natural* sorted order — digits compare as numbers, so ``car-2`` comes before
``car-10`` — which does not depend on the order of the rows, and the names are kept so the
run folder can record the mapping (``labels.json``, ``clients.json``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import DataError

Codes = npt.NDArray[np.int64]
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders the digit runs of ``name`` by value (``car-2`` < ``car-10``)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _DIGITS.split(name) if p)


def _is_text(values: npt.NDArray[Any]) -> bool:
    return values.dtype.kind in "OUS"


def _first_missing(values: npt.NDArray[Any]) -> int | None:
    if values.dtype.kind == "f":
        bad = np.flatnonzero(np.isnan(values))
    elif values.dtype.kind == "O":
        bad = np.flatnonzero([v is None or (isinstance(v, float) and v != v) for v in values])
    else:
        return None
    return int(bad[0]) if len(bad) else None


def _at(row: int, line_offset: int | None) -> str:
    return f"row {row}" if line_offset is None else f"line {row + line_offset}"


def _as_text(values: npt.NDArray[Any]) -> list[str]:
    out = []
    for v in values.tolist():
        if isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        elif isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(str(v))
    return out


def encode_labels(
    columns: Sequence[npt.ArrayLike], where: Sequence[str], *, line_offset: int | None = None
) -> tuple[list[Codes], list[str] | None]:
    """Class ids for the label column of each file, with one mapping shared by all of them.

    Integer-valued labels (``3``, ``3.0``) keep their values and give no names. When any file
    holds text labels, every label is read as a name and numbered in natural order. ``where``
    names each column's source for the one-line error (``file.csv: column 'label'``); with
    ``line_offset`` a bad row is named as the file's line ``row + line_offset`` (CSV: 2).
    """
    arrays = [np.asarray(c) for c in columns]
    for arr, src in zip(arrays, where, strict=True):
        row = _first_missing(arr)
        if row is not None:
            raise DataError(f"{src} has a missing label at {_at(row, line_offset)}")
    if any(_is_text(a) for a in arrays):
        texts = [_as_text(a) for a in arrays]
        names = sorted({t for ts in texts for t in ts}, key=natural_key)
        index = {n: i for i, n in enumerate(names)}
        return [np.asarray([index[t] for t in ts], dtype=np.int64) for ts in texts], names
    codes = []
    for arr, src in zip(arrays, where, strict=True):
        if arr.dtype.kind == "b":
            arr = arr.astype(np.int64)
        if arr.dtype.kind == "f" and not np.all(np.equal(np.mod(arr, 1), 0)):
            row = int(np.flatnonzero(np.mod(arr, 1) != 0)[0])
            raise DataError(
                f"{src}: labels must be integer class ids or names; {_at(row, line_offset)} has {arr[row].item()!r}"
            )
        if arr.dtype.kind not in "iufb":
            raise DataError(f"{src}: labels must be integer class ids or names, not {arr.dtype}")
        if len(arr) and arr.min() < 0:
            row = int(np.argmin(arr))
            raise DataError(f"{src}: labels must be non-negative; {_at(row, line_offset)} has {arr[row].item()!r}")
        codes.append(arr.astype(np.int64).ravel())
    return codes, None


def encode_ids(values: npt.ArrayLike, where: str, *, line_offset: int | None = None) -> tuple[Codes, list[str]]:
    """Client index (0..N-1) of each row and the original id of each client, in natural order."""
    arr = np.asarray(values)
    row = _first_missing(arr)
    if row is not None:
        raise DataError(f"{where} has a missing client id at {_at(row, line_offset)}")
    texts = _as_text(arr)
    names = sorted(set(texts), key=natural_key)
    index = {n: i for i, n in enumerate(names)}
    return np.asarray([index[t] for t in texts], dtype=np.int64), names


def group_rows(owner: Codes, num_clients: int) -> list[Codes]:
    """Each client's row indices (in file order) from the client index of every row."""
    order = np.argsort(owner, kind="stable").astype(np.int64)
    bounds = np.searchsorted(owner[order], np.arange(num_clients + 1))
    return [order[bounds[k] : bounds[k + 1]] for k in range(num_clients)]


def mapping(names: Sequence[str]) -> dict[str, str]:
    """The ``{"0": name0, "1": name1, ...}`` form written to the run folder."""
    return {str(i): n for i, n in enumerate(names)}


__all__ = ["encode_ids", "encode_labels", "group_rows", "mapping", "natural_key"]
