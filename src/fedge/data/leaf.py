"""LEAF-format JSON (Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018).

LEAF's scripts write each split as one or more JSON files::

    {"users": ["f0000_14", ...], "num_samples": [148, ...],
     "user_data": {"f0000_14": {"x": [...], "y": [...]}, ...}}

in ``data/train`` and ``data/test``. ``[data] path`` names the ``train`` folder (or one file
in it); its ``test`` sibling, when present, gives each user's test part (the matching
``*_test_*`` file for a single ``*_train_*`` file), otherwise each user's data is split by
``test_fraction``. Users keep their ids as client names, in natural order. Test users that
are not training users (LEAF's user-based split) form the central test set.

Three kinds of sample are read:

* numbers (FEMNIST's 784 pixels, LEAF Synthetic): the features as they are;
* Shakespeare: ``x`` a fixed-length string, ``y`` the next character. Characters become
  indices in LEAF's 80-character vocabulary (or in the sorted characters of the data when
  it has others); features are the indices as floats, the label the next character's index;
* Sent140: ``x`` a tweet record whose last field is the text, ``y`` the sentiment. The text
  becomes a hashed bag of words of ``text_features`` counts (CRC-32 of each lower-cased word).

CelebA (image file names) and Reddit (token lists) are refused with one line.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import DataError
from fedge.data.federated import FederatedDataset, Ragged, split_local
from fedge.data.names import encode_labels, natural_key

LEAF_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
"""The 80 characters of LEAF's Shakespeare models (``models/utils/language_utils.py``)."""
_WORD = re.compile(r"[a-z0-9']+")


@dataclass
class Split:
    """The users of one LEAF split, each with its samples, in file order."""

    x: dict[str, list[Any]] = field(default_factory=dict)
    y: dict[str, list[Any]] = field(default_factory=dict)
    source: dict[str, Path] = field(default_factory=dict)

    def users(self) -> list[str]:
        return sorted(self.x, key=natural_key)


def _json_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise DataError(f"{path}: no .json files in this LEAF folder")
        return files
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return [path]


def _read_file(path: Path, into: Split) -> None:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("user_data"), dict):
        raise DataError(f"{path}: not a LEAF file (needs 'users' and 'user_data')")
    users = doc.get("users", list(doc["user_data"]))
    counts = doc.get("num_samples", [None] * len(users))
    for user, count in zip(users, counts, strict=False):
        data = doc["user_data"].get(user)
        if not isinstance(data, dict) or not isinstance(data.get("x"), list) or not isinstance(data.get("y"), list):
            raise DataError(f"{path}: user {user!r} has no 'x' and 'y' lists in 'user_data'")
        if len(data["x"]) != len(data["y"]) or (count is not None and count != len(data["y"])):
            raise DataError(f"{path}: user {user!r} has {len(data['x'])} x, {len(data['y'])} y, num_samples {count}")
        uid = str(user)
        into.x.setdefault(uid, []).extend(data["x"])
        into.y.setdefault(uid, []).extend(data["y"])
        into.source.setdefault(uid, path)


def read_split(path: Path) -> Split:
    """Every user of the LEAF file or folder ``path``."""
    split = Split()
    for f in _json_files(path):
        _read_file(f, split)
    if not split.x:
        raise DataError(f"{path}: no users in this LEAF data")
    return split


def test_path(path: Path) -> Path | None:
    """The ``test`` sibling of a ``train`` folder, or the ``*_test_*`` file matching a ``*_train_*`` file."""
    folder = path if path.is_dir() else path.parent
    test_dir = folder.parent / "test"
    if folder.name != "train" or not test_dir.is_dir():
        return None
    if path.is_dir():
        return test_dir
    match = test_dir / path.name.replace("train", "test")
    return match if match.exists() else None


def _kind(x: Any, y: Any, where: str) -> str:
    if isinstance(x, str) and isinstance(y, str) and len(y) == 1:
        return "chars"
    if isinstance(x, list) and x and all(isinstance(v, int | float) for v in np.ravel(np.asarray(x, dtype=object))):
        return "numbers"
    if isinstance(x, list) and x and isinstance(x[-1], str) and all(isinstance(v, str) for v in x):
        return "tweet"
    raise DataError(
        f"{where}: samples of type {type(x).__name__} are not a LEAF kind fedge reads "
        "(numbers as in FEMNIST, Shakespeare text, Sent140 tweets; CelebA and Reddit are not supported)"
    )


def _numbers(xs: list[Any], where: str) -> npt.NDArray[np.float32]:
    try:
        x = np.asarray(xs, dtype=np.float32)
    except (ValueError, TypeError):
        raise DataError(f"{where}: samples have different lengths or non-numbers in 'x'") from None
    if not np.isfinite(x.reshape(len(x), -1)).all():
        row = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
        raise DataError(f"{where}: sample {row} has a NaN or infinite value")
    return x


def _chars(xs: list[Any], ys: list[Any], where: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], str]:
    length = len(xs[0])
    for i, (s, t) in enumerate(zip(xs, ys, strict=True)):
        if not isinstance(s, str) or len(s) != length or not isinstance(t, str) or len(t) != 1:
            raise DataError(f"{where}: sample {i} is not a {length}-character string with a one-character label")
    seen = set("".join(xs)) | set(ys)
    vocab = LEAF_LETTERS if seen <= set(LEAF_LETTERS) else "".join(sorted(seen))
    index = {c: i for i, c in enumerate(vocab)}
    x = np.asarray([[index[c] for c in s] for s in xs], dtype=np.float32)
    y = np.asarray([index[c] for c in ys], dtype=np.int64)
    return x, y, vocab


def bag_of_words(texts: Sequence[str], dim: int) -> npt.NDArray[np.float32]:
    """Word counts hashed into ``dim`` buckets (CRC-32 of each lower-cased word: stable across runs)."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in _WORD.findall(text.lower()):
            out[row, zlib.crc32(word.encode("utf-8")) % dim] += 1.0
    return out


def _encode(
    xs: list[Any], ys: list[Any], where: str, text_features: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], list[str] | None]:
    kind = _kind(xs[0], ys[0], where)
    if kind == "chars":
        x, y, vocab = _chars(xs, ys, where)
        return x, y, list(vocab)
    if kind == "tweet":
        for i, rec in enumerate(xs):
            if not isinstance(rec, list) or not rec or not isinstance(rec[-1], str):
                raise DataError(f"{where}: sample {i} is not a tweet record ending with its text")
        x = bag_of_words([rec[-1] for rec in xs], text_features)
    else:
        x = _numbers(xs, where)
    (y,), names = encode_labels([np.asarray(ys)], [f"{where}: 'y'"])
    return x, y, names


def _dataset_name(path: Path) -> str:
    skip = {"train", "test", "data"}
    here = path if path.is_dir() else path.parent
    return next((p.name for p in [here, *here.parents] if p.name and p.name not in skip), "leaf")


def load_leaf(
    path: str | Path, *, test_fraction: float = 0.2, seed: int = 0, text_features: int = 1024
) -> FederatedDataset:
    """A federation of the LEAF users under ``path`` (see the module docstring)."""
    p = Path(path)
    train = read_split(p)
    tpath = test_path(p)
    test = read_split(tpath) if tpath is not None else Split()
    users = train.users()
    for u in users:
        if not train.y[u]:
            raise DataError(f"{train.source[u]}: user {u!r} has no training samples")
    extra = [u for u in test.users() if u not in train.x]
    blocks = [train.y[u] for u in users] + [test.y.get(u, []) for u in users] + [test.y[u] for u in extra]
    xs = [v for u in users for v in train.x[u]] + [v for u in [*users, *extra] for v in test.x.get(u, [])]
    ys = [v for block in blocks for v in block]
    x, y, label_names = _encode(xs, ys, str(p), text_features)
    starts = np.concatenate([[0], np.cumsum([len(b) for b in blocks])]).astype(np.int64)
    ranges = [np.arange(starts[i], starts[i + 1], dtype=np.int64) for i in range(len(blocks))]
    n = len(users)
    if tpath is None:
        tr, te = split_local(ranges[:n], test_fraction, np.random.default_rng(seed))
    else:
        tr, te = Ragged.from_lists(ranges[:n]), Ragged.from_lists(ranges[n : 2 * n])
    central = np.concatenate(ranges[n:]) if extra else None
    num_classes = len(label_names) if label_names else int(y.max()) + 1
    return FederatedDataset(
        x=x,
        y=y,
        train=tr,
        test=te,
        num_classes=num_classes,
        name=_dataset_name(p),
        x_central=x[central] if central is not None else None,
        y_central=y[central] if central is not None else None,
        client_names=users,
        label_names=label_names,
    )


__all__ = ["LEAF_LETTERS", "bag_of_words", "load_leaf", "read_split", "test_path"]
