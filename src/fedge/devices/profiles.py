"""Device profiles (the TOML catalog) and fleet composition.

A profile is one device class: effective training throughput, RAM available to the app,
network and power. The built-in catalog ships as ``catalog/builtin.toml``; users add or
override profiles with their own TOML file of the same shape. A fleet assigns a profile
to every client from a mix of shares, with a lognormal per-client speed multiplier
(devices of one class differ: thermal throttling, background load, battery saver).
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ConfigError

REQUIRED = ("flops_fp32", "ram_mib", "uplink_mbps", "downlink_mbps", "latency_ms", "power_train_w")
OPTIONAL = ("flops_int8", "power_comm_w", "step_overhead_s", "description", "source")


@dataclass(frozen=True)
class DeviceProfile:
    """One device class; throughputs in FLOP/s, bandwidth in Mb/s, power in W."""

    name: str
    flops_fp32: float
    ram_mib: float
    uplink_mbps: float
    downlink_mbps: float
    latency_ms: float
    power_train_w: float
    power_comm_w: float
    step_overhead_s: float = 0.0
    flops_int8: float | None = None
    description: str = ""
    source: str = ""

    def flops(self, precision: str) -> float:
        """Effective throughput at ``precision`` ('fp32' or 'int8')."""
        if precision == "fp32":
            return self.flops_fp32
        if self.flops_int8 is None:
            raise ConfigError(f"device {self.name!r} has no int8 throughput (flops_int8) in its profile")
        return self.flops_int8


def _number(origin: str, name: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{origin}: device {name!r}: {key} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and key != "step_overhead_s" and key != "latency_ms"):
        raise ConfigError(f"{origin}: device {name!r}: {key} must be positive, got {value!r}")
    return float(value)


def parse_profiles(raw: Mapping[str, Any], origin: str) -> dict[str, DeviceProfile]:
    """Profiles from a parsed TOML document (one table per device)."""
    out: dict[str, DeviceProfile] = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: {name!r} must be a table [{name}] of device fields")
        missing = [k for k in REQUIRED if k not in table]
        if missing:
            raise ConfigError(f"{origin}: device {name!r} is missing field(s) {', '.join(missing)}")
        unknown = [k for k in table if k not in REQUIRED and k not in OPTIONAL]
        if unknown:
            close = difflib.get_close_matches(unknown[0], [*REQUIRED, *OPTIONAL], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{origin}: device {name!r}: unknown field {unknown[0]!r}{hint}")
        nums = {k: _number(origin, name, k, table[k]) for k in REQUIRED}
        int8 = _number(origin, name, "flops_int8", table["flops_int8"]) if "flops_int8" in table else None
        comm = (
            _number(origin, name, "power_comm_w", table["power_comm_w"])
            if "power_comm_w" in table
            else nums["power_train_w"] / 2
        )
        overhead = _number(origin, name, "step_overhead_s", table.get("step_overhead_s", 0.0))
        out[name] = DeviceProfile(
            name=name,
            power_comm_w=comm,
            step_overhead_s=overhead,
            flops_int8=int8,
            description=str(table.get("description", "")),
            source=str(table.get("source", "")),
            **nums,
        )
    return out


def load_profiles(path: str | Path) -> dict[str, DeviceProfile]:
    """Read a user's profile file; errors name the file and the device."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such device profile file")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not a valid TOML device profile file: {exc}") from None
    return parse_profiles(raw, str(p))


_BUILTIN: dict[str, DeviceProfile] | None = None


def builtin_catalog() -> dict[str, DeviceProfile]:
    """The catalog shipped with fedge (``fedge/devices/catalog/*.toml``)."""
    global _BUILTIN
    if _BUILTIN is None:
        cat: dict[str, DeviceProfile] = {}
        folder = resources.files("fedge.devices") / "catalog"
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".toml"):
                cat.update(parse_profiles(tomllib.loads(entry.read_text()), f"catalog/{entry.name}"))
        _BUILTIN = cat
    return dict(_BUILTIN)


def catalog(user_file: str | Path | None = None) -> dict[str, DeviceProfile]:
    """The built-in catalog, extended (or overridden by name) by ``user_file``."""
    cat = builtin_catalog()
    if user_file:
        cat.update(load_profiles(user_file))
    return cat


def lookup(name: str, cat: Mapping[str, DeviceProfile]) -> DeviceProfile:
    """The profile called ``name``; an unknown name lists the close matches."""
    if name in cat:
        return cat[name]
    close = difflib.get_close_matches(name, list(cat), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown device {name!r}{hint} (see `fedge devices`)")


def parse_mix(mix: Mapping[str, float], cat: Mapping[str, DeviceProfile]) -> list[tuple[DeviceProfile, float]]:
    """Check a fleet mix ``{device: share}``: known names, shares in (0, 1] summing to 1."""
    if not mix:
        raise ConfigError("devices.fleet: the mix is empty; give e.g. { pi4 = 0.5, phone-mid = 0.5 }")
    out = []
    for name, share in mix.items():
        prof = lookup(name, cat)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise ConfigError(f"devices.fleet: share of {name!r} must be in (0, 1], got {share!r}")
        out.append((prof, float(share)))
    total = sum(s for _, s in out)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"devices.fleet: shares must sum to 1, they sum to {total:g}")
    return out


@dataclass
class Fleet:
    """Which profile each client runs on, and its speed multiplier (1 = the profile's)."""

    profiles: list[DeviceProfile]
    speed: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.profiles)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.profiles:
            out[p.name] = out.get(p.name, 0) + 1
        return out


def assign_fleet(
    mix: list[tuple[DeviceProfile, float]], num_clients: int, rng: np.random.Generator, jitter: float = 0.0
) -> Fleet:
    """Assign profiles by the mix's shares (exact counts by largest remainder, shuffled) and
    draw each client's speed multiplier from ``lognormal(0, jitter)``."""
    if jitter < 0:
        raise ConfigError(f"devices.speed_jitter must be >= 0, got {jitter}")
    raw = np.array([s * num_clients for _, s in mix])
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: num_clients - int(counts.sum())]] += 1
    names = np.repeat(np.arange(len(mix)), counts)
    rng.shuffle(names)
    speed = rng.lognormal(0.0, jitter, num_clients) if jitter > 0 else np.ones(num_clients)
    return Fleet(profiles=[mix[int(i)][0] for i in names], speed=speed.astype(np.float64))
