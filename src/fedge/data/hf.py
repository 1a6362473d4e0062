"""Hugging Face ``datasets`` as a data source: ``[data] dataset = "hf"``.

``hf_name`` is one of

* a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read with
  ``load_from_disk``; a ``DatasetDict`` gives its ``hf_split``),
* local data files — one CSV/JSON/JSON-lines/Parquet file, a glob of them, or a folder of
  them (read with ``load_dataset``; a single file or glob *is* the split),
* a hub name (``ylecun/mnist``), which needs the network or the local cache.

Columns become arrays: numbers and lists of numbers as they are, images (PIL) as floats in
[0, 1] (channels first), strings are refused. A ``ClassLabel`` label keeps the dataset's
class names; other labels follow :func:`fedge.data.names.encode_labels`. With
``client_column`` each distinct value is one client — the natural partition by id that
Flower Datasets calls ``NaturalIdPartitioner`` (``partition_by``).
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import DataError
from fedge.data.loaders import FileData
from fedge.data.names import encode_ids, encode_labels, group_rows

BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".pq": "parquet"}
"""Suffixes of local data files and the ``datasets`` builder that reads them."""
SAVED_MARKERS = ("state.json", "dataset_dict.json")
"""Files that mark a folder written by ``save_to_disk``."""
HUB_HINT = " (no network? use a local folder or data files, or a cached copy with HF_HUB_OFFLINE=1)"


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError("data.dataset = 'hf' needs the datasets package: pip install 'fedge[hf]'") from None
    return datasets


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _pick_split(obj: Any, name: str, split: str) -> Any:
    if hasattr(obj, "column_names") and not isinstance(obj.column_names, dict):
        return obj
    if split not in obj:
        raise DataError(f"data.hf_split: {name} has no split {split!r} (splits: {', '.join(obj)})")
    return obj[split]


def _open_local(datasets: Any, path: Path, split: str, cache_dir: str | None) -> Any:
    if path.is_dir() and any((path / m).exists() for m in SAVED_MARKERS):
        return _pick_split(datasets.load_from_disk(str(path)), str(path), split)
    if path.is_dir():
        return datasets.load_dataset(str(path), split=split, cache_dir=cache_dir)
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"data.hf_name: {path}: unknown data file type; use {', '.join(BUILDERS)} or a folder")
    return datasets.load_dataset(builder, data_files={split: str(path)}, split=split, cache_dir=cache_dir)


def open_dataset(name: str, *, split: str = "train", cache_dir: str | None = None) -> Any:
    """The ``datasets.Dataset`` that ``hf_name`` and ``hf_split`` name (see the module docstring).

    Every failure of the library (no network, unknown split, unreadable file) is one
    :class:`DataError` line naming the dataset. Without the network a hub name fails after
    the hub client's own bounded retries; with ``HF_HUB_OFFLINE=1`` at once unless cached.
    """
    if not name:
        raise DataError("data.hf_name: required when data.dataset = 'hf'")
    datasets = _datasets()
    path = Path(name).expanduser()
    try:
        if path.exists():
            return _open_local(datasets, path, split, cache_dir)
        if path.suffix.lower() in BUILDERS:
            if not glob.glob(str(path)):
                raise DataError(f"data.hf_name: {name}: no such file")
            builder = BUILDERS[path.suffix.lower()]
            return datasets.load_dataset(builder, data_files={split: str(path)}, split=split, cache_dir=cache_dir)
        return datasets.load_dataset(name, split=split, cache_dir=cache_dir)
    except DataError:
        raise
    except Exception as exc:
        hub = not path.exists() and path.suffix.lower() not in BUILDERS
        source = f"{name!r} from the Hugging Face Hub" if hub else repr(name)
        hint = HUB_HINT if hub else ""
        raise DataError(f"data.hf_name: cannot load {source}: {_first_line(exc)}{hint}") from None


def _is_image(feature: Any) -> bool:
    return type(feature).__name__ == "Image"


def _column_array(ds: Any, col: str, name: str) -> npt.NDArray[np.float32]:
    feature = ds.features[col]
    values = ds.select_columns([col]).with_format("numpy")[:][col]
    arr = np.asarray(values)
    if arr.dtype == object:
        raise DataError(f"{name}: column {col!r} has rows of different shapes (images of different sizes?)")
    if arr.dtype.kind not in "iufb":
        raise DataError(f"{name}: column {col!r} holds {arr.dtype} values; features must be numbers or images")
    out = arr.astype(np.float32)
    if _is_image(feature):
        out /= 255.0
        if out.ndim == 4:
            out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if bad.any():
        raise DataError(f"{name}: column {col!r} has a missing or NaN value in row {int(np.flatnonzero(bad)[0])}")
    return out


def _features(ds: Any, cols: Sequence[str], name: str) -> npt.NDArray[np.float32]:
    arrays = [_column_array(ds, c, name) for c in cols]
    if len(arrays) == 1 and arrays[0].ndim > 1:
        return arrays[0]
    return np.concatenate([a.reshape(len(a), -1) for a in arrays], axis=1)


def _labels(ds: Any, col: str, name: str) -> tuple[npt.NDArray[np.int64], list[str] | None]:
    feature = ds.features[col]
    raw = np.asarray(ds.select_columns([col]).with_format("numpy")[:][col])
    (codes,), names = encode_labels([raw], [f"{name}: column {col!r}"])
    class_names = getattr(feature, "names", None)
    if type(feature).__name__ == "ClassLabel" and class_names:
        return codes, [str(n) for n in class_names]
    return codes, names


def dataset_arrays(
    ds: Any, *, name: str, label: str = "label", client: str | None = None, features: Sequence[str] = ()
) -> FileData:
    """Arrays, the natural partition by ``client`` (when given) and the names, from one ``Dataset``."""
    columns = list(ds.column_names)
    for col in (label, client, *features):
        if col and col not in columns:
            raise DataError(f"{name}: no column {col!r} (columns: {', '.join(columns)})")
    chosen = list(features) or [c for c in columns if c not in (label, client)]
    if not chosen:
        raise DataError(f"{name}: no feature columns besides {label!r}")
    if not len(ds):
        raise DataError(f"{name}: the split has no rows")
    x = _features(ds, chosen, name)
    y, label_names = _labels(ds, label, name)
    if not client:
        return FileData(x, y, label_names=label_names)
    raw = np.asarray(ds.select_columns([client]).with_format("numpy")[:][client])
    owner, client_names = encode_ids(raw, f"{name}: column {client!r}")
    return FileData(x, y, group_rows(owner, len(client_names)), client_names, label_names)


def load_hf(
    name: str,
    *,
    split: str = "train",
    label: str = "label",
    client: str | None = None,
    features: Sequence[str] = (),
    cache_dir: str | None = None,
) -> FileData:
    """Open ``name`` (see :func:`open_dataset`) and read it as :func:`dataset_arrays` does."""
    ds = open_dataset(name, split=split, cache_dir=cache_dir)
    return dataset_arrays(ds, name=f"{name}[{split}]", label=label, client=client, features=features)


__all__ = ["dataset_arrays", "load_hf", "open_dataset"]
