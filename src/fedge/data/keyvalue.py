"""Masked key-value records: keys hashed on the device with a secret the server never sees.

Edge logs are often ``key -> value`` records (sensor channel -> reading, app -> minutes)
whose keys are themselves sensitive. Each record is one JSON line::

    {"client_id": "car-017", "label": "drowsy", "features": {"eyelid.perclos": 0.31, ...}}

On the client every key is mapped to one of ``dim`` buckets, with a sign, by the *hashing
trick* (Weinberger et al., "Feature Hashing for Large Scale Multitask Learning", ICML
2009), keyed with HMAC-SHA256 (RFC 2104; FIPS 198-1) under a federation secret shared by
the devices only. The model sees a fixed-size vector ``x[b] = Σ sign(k)·value(k)`` over
the keys ``k`` in bucket ``b``: raw keys never leave the device, and without the secret
the server cannot test a guessed key against a bucket. Two keys in one bucket collide;
:func:`collisions` measures how often.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import DataError
from fedge.data.federated import FederatedDataset, split_local

MIN_SECRET_BYTES = 16


@dataclass(frozen=True)
class KeyHasher:
    """Maps a key to ``(bucket, sign)`` with HMAC-SHA256 under ``secret``."""

    secret: bytes = field(repr=False)
    dim: int
    signed: bool = True

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise DataError(f"the federation secret must be at least {MIN_SECRET_BYTES} bytes, got {len(self.secret)}")
        if not 1 <= self.dim <= 2**24:
            raise DataError(f"hashed feature dimension must be in 1..{2**24}, got {self.dim}")

    def bucket(self, key: str) -> tuple[int, float]:
        digest = hmac.new(self.secret, key.encode("utf-8"), hashlib.sha256).digest()
        index = int.from_bytes(digest[:8], "little") % self.dim
        sign = -1.0 if self.signed and digest[8] & 1 else 1.0
        return index, sign

    def vector(self, features: Mapping[str, float]) -> npt.NDArray[np.float32]:
        """The hashed feature vector of one record."""
        x = np.zeros(self.dim, dtype=np.float64)
        for key, value in features.items():
            i, s = self.bucket(key)
            x[i] += s * value
        return x.astype(np.float32)

    def matrix(self, rows: Sequence[Mapping[str, float]]) -> npt.NDArray[np.float32]:
        """The hashed vectors of many records; each distinct key is hashed once."""
        cache: dict[str, int] = {}
        signs: list[float] = []
        cols: list[int] = []
        vals: list[float] = []
        counts: list[int] = []
        for features in rows:
            counts.append(len(features))
            for key, value in features.items():
                j = cache.get(key)
                if j is None:
                    j = cache[key] = len(signs)
                    i, sgn = self.bucket(key)
                    signs.append(sgn * (i + 1))
                cols.append(j)
                vals.append(value)
        x = np.zeros((len(rows), self.dim), dtype=np.float64)
        if cols:
            code = np.asarray(signs)[np.asarray(cols)]
            r = np.repeat(np.arange(len(rows)), counts)
            np.add.at(x, (r, np.abs(code).astype(np.int64) - 1), np.sign(code) * np.asarray(vals))
        return x.astype(np.float32)


@dataclass(frozen=True)
class Record:
    client_id: str
    label: str
    features: dict[str, float]


@dataclass
class ReadStats:
    """How many lines were read, kept, and skipped for each reason."""

    lines: int = 0
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def _problem(obj: Any, labels: Sequence[str] | None) -> str | dict[str, float]:
    """What is wrong with one parsed line, or its features as floats."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    cid = obj.get("client_id")
    if cid is None or isinstance(cid, bool) or not isinstance(cid, str | int):
        return "missing or invalid client_id"
    label = obj.get("label")
    if label is None or isinstance(label, bool) or not isinstance(label, str | int):
        return "missing label"
    if labels is not None and str(label) not in labels:
        return f"unknown label {str(label)[:40]!r}"
    feats = obj.get("features")
    if not isinstance(feats, dict):
        return "features is not an object"
    out: dict[str, float] = {}
    for k, v in feats.items():
        if type(v) is float or (type(v) is int):
            try:
                f = float(v)
            except OverflowError:
                return "feature value out of float range"
            if math.isfinite(f):
                out[k] = f
                continue
        return "non-numeric feature value"
    return out


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json", ".ndjson"))
        if not files:
            raise DataError(f"{path}: no .jsonl files in this folder")
        return files
    if not path.exists():
        raise DataError(f"{path}: no such file")
    return [path]


def read_records(
    path: str | Path, *, strict: bool = False, labels: Sequence[str] | None = None
) -> tuple[list[Record], ReadStats]:
    """Read JSON-lines records from a file or a folder of ``.jsonl`` files.

    A bad record (corrupt JSON, JSON nested too deeply, an integer beyond Python's digit
    limit, a value beyond float range, missing label or client id, non-numeric value, a
    label outside ``labels``) is skipped and counted by reason, or with ``strict`` raises a
    :class:`DataError` naming file and line.
    """
    records: list[Record] = []
    stats = ReadStats()
    for f in _files(Path(path)):
        with f.open(encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                stats.lines += 1
                try:
                    obj = json.loads(line)
                    checked = _problem(obj, labels)
                except json.JSONDecodeError:
                    checked = "corrupt JSON"
                except RecursionError:
                    checked = "JSON nested too deeply"
                except ValueError:  # an integer beyond Python's digit limit (sys.get_int_max_str_digits)
                    checked = "integer too large"
                if isinstance(checked, str):
                    if strict:
                        raise DataError(f"{f}:{i}: {checked}")
                    stats.skipped[checked] += 1
                    continue
                records.append(Record(str(obj["client_id"]), str(obj["label"]), checked))
                stats.kept += 1
    return records, stats


@dataclass(frozen=True)
class CollisionStats:
    """How many distinct keys share a bucket with another key.

    ``expected_rate`` is what uniform hashing predicts: ``1 - (1 - 1/dim)^(keys - 1)``.
    """

    keys: int
    dim: int
    occupied: int
    colliding_keys: int

    @property
    def rate(self) -> float:
        return self.colliding_keys / self.keys if self.keys else 0.0

    @property
    def expected_rate(self) -> float:
        return 1.0 - (1.0 - 1.0 / self.dim) ** max(self.keys - 1, 0) if self.keys else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "dim": self.dim,
            "occupied_buckets": self.occupied,
            "colliding_keys": self.colliding_keys,
            "rate": self.rate,
            "expected_rate": self.expected_rate,
        }


def collisions(keys: Iterable[str], hasher: KeyHasher) -> CollisionStats:
    """Measure collisions among the distinct ``keys`` (done where the keys are, on a device)."""
    per_bucket = Counter(hasher.bucket(k)[0] for k in set(keys))
    colliding = sum(n for n in per_bucket.values() if n > 1)
    return CollisionStats(
        keys=sum(per_bucket.values()), dim=hasher.dim, occupied=len(per_bucket), colliding_keys=colliding
    )


@dataclass
class KeyValueData:
    """A masked key-value federation and what was measured while loading it."""

    dataset: FederatedDataset
    label_names: list[str]
    client_names: list[str]
    stats: ReadStats
    collisions: CollisionStats


def load_keyvalue(
    path: str | Path,
    *,
    secret: bytes,
    dim: int = 256,
    labels: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    signed: bool = True,
) -> KeyValueData:
    """Read records, hash each client's keys into ``dim`` features, and federate by ``client_id``.

    ``labels`` fixes the class order (the federation agrees on it ahead); by default the
    sorted distinct labels. Each client's records are split into train and test parts.
    """
    records, stats = read_records(path, strict=strict, labels=labels)
    if not records:
        raise DataError(f"{path}: no usable records ({stats.skipped_total} skipped: {dict(stats.skipped) or 'empty'})")
    hasher = KeyHasher(secret, dim, signed)
    names = list(labels) if labels is not None else sorted({r.label for r in records})
    label_index = {n: i for i, n in enumerate(names)}
    clients = sorted({r.client_id for r in records}, key=lambda c: (len(c), c))
    client_index = {c: i for i, c in enumerate(clients)}
    order = sorted(range(len(records)), key=lambda i: client_index[records[i].client_id])
    ordered = [records[i] for i in order]
    x = hasher.matrix([r.features for r in ordered])
    y = np.asarray([label_index[r.label] for r in ordered], dtype=np.int64)
    owner = np.asarray([client_index[r.client_id] for r in ordered], dtype=np.int64)
    bounds = np.searchsorted(owner, np.arange(len(clients) + 1))
    parts = [np.arange(bounds[k], bounds[k + 1], dtype=np.int64) for k in range(len(clients))]
    train, test = split_local(parts, test_fraction, np.random.default_rng(seed))
    data = FederatedDataset(
        x=x,
        y=y,
        train=train,
        test=test,
        num_classes=len(names),
        name=Path(path).name,
        client_names=clients,
        label_names=names,
    )
    measured = collisions((k for r in ordered for k in r.features), hasher)
    return KeyValueData(data, names, clients, stats, measured)
