"""The target device of an export: its profile from the device catalog, and the estimates.

Profiles come from :mod:`fedge.devices` (the TOML catalog shared with the device
simulation). Latency per sample is estimated as the model's forward FLOPs over the
device's effective throughput (its int8 throughput for an int8 model, when the profile
has one); the memory need is the model file plus one sample's activations plus an
assumed ONNX Runtime footprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALIASES = {
    "jetson-orin-nano": "orin-nano",
    "jetson-agx-orin": "agx-orin",
    "raspberry-pi-4": "pi4",
    "raspberry-pi-5": "pi5",
    "raspberry-pi-zero-2w": "pi-zero-2w",
}
"""Common long names of catalog devices."""

RUNTIME_MIB = 30.0
"""Assumed resident memory of the ONNX Runtime CPU library and session itself."""


def device_profile(name: str, profiles_file: str | None = None) -> Any:
    """The catalog profile called ``name`` (or a common alias of it).

    An unknown name is a ConfigError naming it and the close matches.
    """
    from fedge.devices import catalog, lookup

    return lookup(ALIASES.get(name, name), catalog(profiles_file or None))


@dataclass
class DeviceEstimate:
    device: str
    precision: str
    throughput_flops: float
    forward_flops: int
    latency_ms_per_sample: float
    memory_needed_mib: float
    memory_available_mib: float
    fits: bool
    note: str = ""


def estimate(profile: Any, *, forward_flops: int, activations: int, model_bytes: int, int8: bool) -> DeviceEstimate:
    """Latency per sample and memory fit of a model on ``profile``."""
    precision, note = "fp32", ""
    throughput = float(profile.flops_fp32)
    if int8:
        if profile.flops_int8 is not None:
            precision, throughput = "int8", float(profile.flops_int8)
        else:
            note = "the profile has no int8 throughput; its fp32 figure is used"
    need = (model_bytes + 4 * activations) / 2**20 + RUNTIME_MIB
    return DeviceEstimate(
        device=profile.name,
        precision=precision,
        throughput_flops=throughput,
        forward_flops=int(forward_flops),
        latency_ms_per_sample=1e3 * forward_flops / throughput,
        memory_needed_mib=need,
        memory_available_mib=float(profile.ram_mib),
        fits=need <= float(profile.ram_mib),
        note=note,
    )
