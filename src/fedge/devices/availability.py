"""Who is online at a given simulated time: always, diurnal, charging-only, or a trace.

Every model is a pure function of ``(seed, client, simulated time)``, so a seed fixes the
whole availability history whatever order clients are asked in.

The trace loader reads FedScale's client behaviour trace (Lai et al., "FedScale:
Benchmarking Model and System Performance of Federated Learning at Scale", ICML 2022):
a pickled ``dict`` of client id -> ``{'active': [t, ...], 'inactive': [t, ...],
'finish_time': T, 'duration': d, 'model': str}``, where the client is online in each
``[active[i], inactive[i]]`` window of a period that repeats every ``finish_time``
seconds. A pickle's opcodes are checked before it is loaded: plain values only (no
import, no call), at most :data:`MAX_TRACE_BYTES` of file and bounded counts of values,
containers and windows, so a trace file can neither run code nor allocate beyond its own
size; the same content as JSON is accepted too.
"""

from __future__ import annotations

import bisect
import io
import json
import math
import pickle
import pickletools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedge.core.errors import DataError

DAY_S = 86_400.0
HOUR_S = 3_600.0


class Availability(Protocol):
    def online(self, ids: Sequence[int], t: float) -> list[int]:
        """The subset of ``ids`` online at simulated time ``t`` (seconds since the start)."""
        ...


class AlwaysOn:
    """Every client is always online."""

    def online(self, ids: Sequence[int], t: float) -> list[int]:
        return list(ids)


def _slot_uniform(seed: int, stream: int, cid: int, slot: int) -> float:
    return float(np.random.default_rng([seed, stream, cid, slot]).random())


@dataclass
class Diurnal:
    """Online with a probability that follows the client's local time of day.

    Each client gets a time zone offset (uniform over 24 h from the seed); its online
    probability is ``low + (high - low) * (1 + cos(2π (h - peak) / 24)) / 2`` at local hour
    ``h``, redrawn every ``slot_s`` seconds (phones are idle, plugged in and on Wi-Fi at
    night, as in the availability study of Yang et al., WWW 2021).
    """

    seed: int
    low: float = 0.1
    high: float = 0.9
    peak_hour: float = 2.0
    slot_s: float = 900.0

    def probability(self, cid: int, t: float) -> float:
        offset = _slot_uniform(self.seed, 0xD1, cid, 0) * 24.0
        hour = (t / HOUR_S + offset) % 24.0
        wave = (1.0 + math.cos(2 * math.pi * (hour - self.peak_hour) / 24.0)) / 2.0
        return self.low + (self.high - self.low) * wave

    def online(self, ids: Sequence[int], t: float) -> list[int]:
        slot = int(t // self.slot_s)
        return [c for c in ids if _slot_uniform(self.seed, 0xD2, c, slot) < self.probability(c, t)]


@dataclass
class ChargingOnly:
    """Online only while charging: a nightly window per client (FL on phones trains only
    when idle and plugged in; Bonawitz et al., "Towards Federated Learning at Scale", 2019).

    The window starts at a local hour drawn from ``N(start_hour, 1.5)`` and lasts
    ``U(min_hours, max_hours)``; the time zone offset is uniform over 24 h.
    """

    seed: int
    start_hour: float = 22.0
    min_hours: float = 5.0
    max_hours: float = 9.0

    def window(self, cid: int) -> tuple[float, float, float]:
        rng = np.random.default_rng([self.seed, 0xC4, cid])
        offset = rng.uniform(0, 24)
        start = rng.normal(self.start_hour, 1.5) % 24.0
        return offset, start, rng.uniform(self.min_hours, self.max_hours)

    def online(self, ids: Sequence[int], t: float) -> list[int]:
        out = []
        for c in ids:
            offset, start, length = self.window(c)
            hour = (t / HOUR_S + offset) % 24.0
            if (hour - start) % 24.0 < length:
                out.append(c)
        return out


@dataclass(frozen=True)
class ClientTrace:
    """One client's repeating online windows (FedScale semantics)."""

    active: tuple[float, ...]
    inactive: tuple[float, ...]
    finish_time: float

    def online_at(self, t: float) -> bool:
        norm = t % self.finish_time
        i = bisect.bisect_right(self.active, norm) - 1
        return i >= 0 and norm <= self.inactive[i]


@dataclass
class TraceAvailability:
    """Availability from a behaviour trace; fedge client ``i`` follows the ``i``-th trace
    (in sorted key order, wrapping around when there are more clients than traces)."""

    traces: list[ClientTrace]

    def online(self, ids: Sequence[int], t: float) -> list[int]:
        return [c for c in ids if self.traces[c % len(self.traces)].online_at(t)]


MAX_TRACE_BYTES = 256 * 2**20
"""Largest trace file read (FedScale's full client trace is well under this)."""
MAX_TRACE_OPS = 16_000_000
"""Most pickle opcodes in a trace: with :data:`MAX_TRACE_CONTAINERS`, what bounds the objects it can make."""
MAX_TRACE_CONTAINERS = 2_000_000
MAX_TRACE_WINDOWS = 16_000_000
"""Most online windows over all clients (a pickle can share one list among many clients)."""

_CONTAINER_OPS = frozenset(
    {"EMPTY_DICT", "DICT", "EMPTY_LIST", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"}
    | {"EMPTY_SET", "FROZENSET"}
)

_PLAIN_OPS = frozenset(
    {
        *("PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "NONE", "NEWTRUE", "NEWFALSE"),
        *("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"),
        *("STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"),
        *("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"),
        *("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET", "MEMOIZE"),
        *_CONTAINER_OPS,
    }
)
"""Opcodes that build plain values only: no import (GLOBAL), no call (REDUCE, NEWOBJ, BUILD), no buffers."""


def _check_pickle(data: bytes) -> None:
    """Walk the opcodes before anything is built: plain values only, in bounded numbers.

    A trace needs no class, so every import is refused (naming it); no call opcode is
    admitted, so nothing can allocate beyond the opcodes' own count (the unbounded
    ``bytes(10**9)`` of a 43-byte pickle needs a call).
    """
    containers = 0
    strings: list[str] = []
    for ops, (op, arg, _) in enumerate(pickletools.genops(data), start=1):
        containers += op.name in _CONTAINER_OPS
        if op.name in ("GLOBAL", "INST"):
            raise pickle.UnpicklingError(f"refusing to load {str(arg).replace(' ', '.')}")
        if op.name == "STACK_GLOBAL":
            raise pickle.UnpicklingError(f"refusing to load {'.'.join(strings[-2:])}")
        if op.name not in _PLAIN_OPS:
            raise pickle.UnpicklingError(f"refusing opcode {op.name} (a trace holds plain values only)")
        if ops > MAX_TRACE_OPS or containers > MAX_TRACE_CONTAINERS:
            raise pickle.UnpicklingError(f"more than {MAX_TRACE_OPS} values or {MAX_TRACE_CONTAINERS} containers")
        if isinstance(arg, str):
            strings = [*strings[-1:], arg]


class _PlainUnpickler(pickle.Unpickler):
    """Loads a pickle that :func:`_check_pickle` passed; refuses any import should one get through."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _parse_trace(raw: Any, origin: str) -> list[ClientTrace]:
    if not isinstance(raw, Mapping) or not raw:
        raise DataError(
            f"{origin}: not a client behaviour trace (expected a non-empty mapping "
            "of client id -> {active, inactive, finish_time})"
        )
    out = []
    try:
        keys = sorted(raw, key=lambda k: (0, int(k)) if str(k).lstrip("-").isdigit() else (1, str(k)))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{origin}: client ids must be numbers or names ({type(exc).__name__})") from None
    windows = 0
    for key in keys:
        entry = raw[key]
        try:
            windows += len(entry["active"]) + len(entry["inactive"])
            if windows > 2 * MAX_TRACE_WINDOWS:
                raise DataError(f"{origin}: more than {MAX_TRACE_WINDOWS} online windows in all")
            active = tuple(float(v) for v in entry["active"])
            inactive = tuple(float(v) for v in entry["inactive"])
            finish = float(entry["finish_time"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise DataError(
                f"{origin}: client {str(key)[:40]!r}: not a trace entry with active, inactive "
                f"and finish_time ({type(exc).__name__}: {str(exc)[:80]})"
            ) from None
        if not all(map(math.isfinite, (*active, *inactive, finish))):
            raise DataError(f"{origin}: client {str(key)[:40]!r}: times must be finite numbers")
        if len(active) != len(inactive) or not active or finish <= 0:
            raise DataError(
                f"{origin}: client {key!r}: active and inactive must be equal-length, "
                "non-empty lists and finish_time > 0"
            )
        if any(b < a for a, b in zip(active, inactive, strict=True)) or list(active) != sorted(active):
            raise DataError(f"{origin}: client {key!r}: windows must be sorted with active <= inactive")
        out.append(ClientTrace(active, inactive, finish))
    return out


def load_trace(path: str | Path) -> TraceAvailability:
    """Read a FedScale client behaviour trace (pickle of plain types, or JSON)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such trace file")
    if p.stat().st_size > MAX_TRACE_BYTES:
        raise DataError(f"{p}: trace file larger than {MAX_TRACE_BYTES // 2**20} MiB")
    data = p.read_bytes()
    raw: Any
    if data[:1] in (b"{", b"[") or p.suffix == ".json":
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, bad UTF-8, too long an integer
            raise DataError(f"{p}: not a JSON trace file: {type(exc).__name__}: {str(exc)[:120]}") from None
    else:
        try:
            _check_pickle(data)
            raw = _PlainUnpickler(io.BytesIO(data)).load()
        except Exception as exc:  # any refusal or malformed stream, in one line
            raise DataError(f"{p}: not a FedScale trace pickle: {str(exc)[:160]}") from None
    return TraceAvailability(_parse_trace(raw, str(p)))
