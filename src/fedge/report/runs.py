"""Reading a finished run folder (written by :func:`fedge.experiment.write_outputs`).

Every problem is a :class:`~fedge.core.errors.DataError` that names the file (and, for
``metrics.jsonl``, the line), so ``fedge report`` can say exactly what is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedge.core.errors import DataError
from fedge.simulation.history import History, RoundRecord, read_jsonl

SIM_TIME_KEYS = ("sim_clock_s", "sim_time_s")
"""``extra`` keys holding simulated time: a clock (cumulative) or a per-round duration."""


@dataclass
class RunData:
    """What a report needs from one run folder."""

    path: Path
    history: History
    summary: dict[str, Any] = field(default_factory=dict)
    label_histogram: list[list[int]] | None = None
    dataset: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    label_names: list[str] | None = None
    """Class names when the data's labels were names (the run's ``labels.json``)."""

    @property
    def name(self) -> str:
        return self.path.name

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """Rounds and values of a column or numeric ``extra`` key, skipping missing/NaN."""
        rounds, values = [], []
        for rec in self.history:
            v = getattr(rec, key, None) if key in RoundRecord.__dataclass_fields__ else rec.extra.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
                continue
            rounds.append(rec.round)
            values.append(float(v))
        return rounds, values

    def sim_hours(self) -> list[float] | None:
        """Simulated hours at the end of each round, or ``None`` when not recorded.

        ``sim_clock_s`` is read as a clock; ``sim_time_s`` as the round's duration and summed.
        """
        for key in SIM_TIME_KEYS:
            vals = [rec.extra.get(key) for rec in self.history]
            if not vals or any(isinstance(v, bool) or not isinstance(v, int | float) for v in vals):
                continue
            secs = [float(v) for v in vals]  # type: ignore[arg-type]
            if key == "sim_time_s":
                total, acc = 0.0, []
                for s in secs:
                    total += s
                    acc.append(total)
                secs = acc
            return [s / 3600.0 for s in secs]
        return None

    def configured_fleet(self) -> dict[str, float]:
        """The ``[devices] fleet`` shares of ``config.toml`` when the device simulation was on."""
        dev = self.config.get("devices")
        if not isinstance(dev, dict) or not dev.get("enabled") or not isinstance(dev.get("fleet"), dict):
            return {}
        return {str(k): float(v) for k, v in dev["fleet"].items() if isinstance(v, int | float)}

    def client_accuracy(self) -> list[float]:
        raw = self.summary.get("client_accuracy") or {}
        if not isinstance(raw, dict):
            return []
        return [float(v) for v in raw.values() if isinstance(v, int | float)]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: corrupt JSON: {exc.msg}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None


def _label_names(path: Path) -> list[str] | None:
    """``labels.json`` (``{"0": "alert", "1": "drowsy"}``) as a list indexed by class, when present."""
    if not path.exists():
        return None
    raw = _read_json(path)
    if not isinstance(raw, dict) or not all(str(k).isdigit() for k in raw):
        raise DataError(f"{path}: expected an object mapping class numbers to names")
    return [str(raw[k]) for k in sorted(raw, key=int)]


def _check_lines(path: Path) -> None:
    """Each non-blank line must be a JSON object with an integer ``round``."""
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{i}: corrupt metrics line: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        rnd = obj.get("round")
        if not isinstance(rnd, int) or isinstance(rnd, bool):
            raise DataError(f"{path}:{i}: 'round' must be an integer, got {rnd!r}")


def load_run(path: str | Path) -> RunData:
    """Read a run folder; ``metrics.jsonl`` is required, the other files are optional."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: not a run folder (no such directory)")
    metrics = p / "metrics.jsonl"
    if not metrics.exists():
        raise DataError(f"{metrics}: missing; is {p} a finished fedge run?")
    _check_lines(metrics)
    history = read_jsonl(metrics)
    if not len(history):
        raise DataError(f"{metrics}: no rounds recorded")
    summary: dict[str, Any] = {}
    if (p / "summary.json").exists():
        raw = _read_json(p / "summary.json")
        if not isinstance(raw, dict):
            raise DataError(f"{p / 'summary.json'}: expected a JSON object")
        summary = raw
    hist: list[list[int]] | None = None
    dataset = ""
    if (p / "partition.json").exists():
        part = _read_json(p / "partition.json")
        lh = part.get("label_histogram") if isinstance(part, dict) else None
        if not (isinstance(lh, list) and all(isinstance(r, list) for r in lh)):
            raise DataError(f"{p / 'partition.json'}: 'label_histogram' must be a list of lists")
        hist = lh
        dataset = str(part.get("dataset", ""))
    config: dict[str, Any] = {}
    if (p / "config.toml").exists():
        import tomllib

        try:
            config = tomllib.loads((p / "config.toml").read_text())
        except tomllib.TOMLDecodeError as exc:
            raise DataError(f"{p / 'config.toml'}: corrupt TOML: {exc}") from None
    return RunData(
        path=p,
        history=history,
        summary=summary,
        label_histogram=hist,
        dataset=dataset,
        config=config,
        label_names=_label_names(p / "labels.json"),
    )
