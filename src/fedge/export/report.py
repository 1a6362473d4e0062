"""The export report: what was exported, how big, how accurate, and whether it fits."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from fedge.export.device import DeviceEstimate
from fedge.export.widths import WidthModel


@dataclass
class ExportReport:
    run_dir: str
    model: str
    quantize: str
    prune_ratio: float
    prune_norm: str
    finetune_rounds: int
    params_before: int
    params_after: int
    float32_onnx_bytes: int
    """The unpruned float32 model exported to ONNX: the reference size."""
    onnx_bytes: int
    """The written ``model.onnx``."""
    size_ratio: float
    accuracy_torch: float
    """The trained model in PyTorch on the held-out data."""
    accuracy_pruned: float
    accuracy_onnx: float
    """The written ``model.onnx`` in ONNX Runtime on the held-out data."""
    max_abs_diff: float
    """ONNX Runtime vs PyTorch outputs of the float32 export."""
    held_out: int
    host_latency_ms_float32: float
    host_latency_ms: float
    device: DeviceEstimate | None = None
    hidden: list[int] = field(default_factory=list)
    format: str = "onnx"
    """``onnx``, ``litert`` or ``executorch``; the ``*onnx*`` figures above are this format's file."""
    runtime: str = "ONNX Runtime"
    """What ran the written file for the accuracy, the check and the latency."""
    model_file: str = "model.onnx"
    catalog: list[DeviceEstimate] = field(default_factory=list)
    """The estimate on every device of the catalog."""
    width_models: list[WidthModel] = field(default_factory=list)
    """A heterofl run's model file per width class (:mod:`fedge.export.widths`)."""

    @property
    def accuracy_drop_points(self) -> float:
        return 100.0 * (self.accuracy_torch - self.accuracy_onnx)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["accuracy_drop_points"] = self.accuracy_drop_points
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def to_text(self) -> str:
        lines = [
            f"fedge export of {self.run_dir}",
            f"  model          {self.model}; quantisation {self.quantize}; "
            f"pruning {self.prune_ratio:g} by {self.prune_norm}"
            + (f" + {self.finetune_rounds} federated fine-tuning rounds" if self.finetune_rounds else ""),
            f"  parameters     {self.params_before:,} -> {self.params_after:,}",
            f"  size           float32 {self.format} {self.float32_onnx_bytes:,} B -> {self.model_file} "
            f"{self.onnx_bytes:,} B ({self.size_ratio:.2f}x smaller)",
            f"  accuracy       PyTorch {self.accuracy_torch:.4f} -> pruned {self.accuracy_pruned:.4f} -> "
            f"{self.runtime} {self.accuracy_onnx:.4f} on {self.held_out} held-out samples "
            f"({self.accuracy_drop_points:+.2f} points lost)",
            f"  float32 check  max |{self.runtime} - PyTorch| = {self.max_abs_diff:.2e}",
            f"  this machine   {self.host_latency_ms_float32:.3f} ms/sample float32, "
            f"{self.host_latency_ms:.3f} ms/sample {self.model_file} ({self.runtime}, 1 thread)",
        ]
        d = self.device
        if d is not None:
            lines += [
                f"  device         {d.device}: ~{d.latency_ms_per_sample:.3g} ms/sample estimated "
                f"({d.forward_flops:,} FLOPs at {d.throughput_flops:.3g} FLOP/s {d.precision})",
                f"  memory         needs ~{d.memory_needed_mib:.1f} MiB of {d.memory_available_mib:.0f} MiB: "
                + ("fits" if d.fits else "DOES NOT FIT"),
            ]
            if d.note:
                lines.append(f"  note           {d.note}")
        if self.catalog:
            lines.append("  catalog        device: estimated ms/sample, memory needed of available, verdict")
            lines += [
                f"    {e.device:<16} {e.latency_ms_per_sample:9.3g} ms {e.precision}  "
                f"{e.memory_needed_mib:6.1f} of {e.memory_available_mib:6.0f} MiB  "
                + ("fits" if e.fits else "DOES NOT FIT")
                for e in self.catalog
            ]
        if self.width_models:
            lines.append("  width classes  ratio: file, clients, parameters, bytes, ONNX Runtime accuracy, max diff")
            lines += [
                f"    {m.ratio:<6g} {m.file:<18} {m.clients:4d} clients {m.params:9,} params {m.onnx_bytes:9,} B "
                f"acc {m.accuracy_onnx:.4f}  |diff| {m.max_abs_diff:.1e}"
                for m in self.width_models
            ]
        return "\n".join(lines) + "\n"
