"""Per-round history of a run, and its JSON-lines / CSV files."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedge.core.errors import DataError

COLUMNS = (
    "round",
    "participants",
    "failed",
    "train_loss",
    "test_loss",
    "test_accuracy",
    "fed_test_loss",
    "fed_test_accuracy",
    "uplink_bytes",
    "downlink_bytes",
    "wall_s",
)


@dataclass
class RoundRecord:
    """One round: who took part, what it cost, how good the model is afterwards.

    ``uplink_bytes``/``downlink_bytes`` are totals over the round's clients;
    ``dropped`` maps a reason to the ids it dropped; ``extra`` holds values other parts
    report (simulated time, energy, ε, per-client accuracy ...).

    ``train_loss`` is what the clients report, not a figure the server measured: in a
    simulation their example-weighted mean; in a deployed run, where a node could report
    anything, their median (also ``extra["client_reported_train_loss_median"]``), so that
    one node cannot set it. ``test_*`` are the server's own evaluation.
    """

    round: int
    participants: int
    failed: int = 0
    train_loss: float = math.nan
    test_loss: float = math.nan
    test_accuracy: float = math.nan
    fed_test_loss: float = math.nan
    fed_test_accuracy: float = math.nan
    uplink_bytes: int = 0
    downlink_bytes: int = 0
    wall_s: float = 0.0
    dropped: dict[str, list[int]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RoundRecord:
        fields: dict[str, Any] = {
            k: (math.nan if v is None else v) for k, v in d.items() if k in cls.__dataclass_fields__
        }
        return cls(**fields)


@dataclass
class History:
    rounds: list[RoundRecord] = field(default_factory=list)

    def __iter__(self) -> Iterator[RoundRecord]:
        return iter(self.rounds)

    def __len__(self) -> int:
        return len(self.rounds)

    def append(self, rec: RoundRecord) -> None:
        self.rounds.append(rec)

    def last(self, key: str) -> float:
        """The latest non-NaN value of column ``key``."""
        for rec in reversed(self.rounds):
            v = getattr(rec, key, None)
            if v is None:
                v = rec.extra.get(key)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                return float(v)
        return math.nan

    @property
    def final_accuracy(self) -> float:
        return self.last("test_accuracy")

    def column(self, key: str) -> list[float]:
        return [float(getattr(r, key)) for r in self.rounds]


def write_jsonl(history: History, path: Path) -> None:
    with path.open("w") as f:
        for rec in history:
            f.write(json.dumps(rec.to_json()) + "\n")


def write_csv(history: History, path: Path) -> None:
    extra_keys = sorted({k for r in history for k, v in r.extra.items() if isinstance(v, int | float)})
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*COLUMNS, *extra_keys])
        for r in history:
            w.writerow([getattr(r, c) for c in COLUMNS] + [r.extra.get(k, "") for k in extra_keys])


def read_jsonl(path: Path) -> History:
    """Read a run's ``metrics.jsonl``; a corrupt line is a :class:`DataError` naming it."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    hist = History()
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            hist.append(RoundRecord.from_json(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            raise DataError(f"{path}:{i}: corrupt metrics line: {exc}") from None
    return hist
