"""Model compression for deployment: structured pruning, int8 quantisation, export to device runtimes.

:func:`export_run` turns a finished run folder into a ``model.onnx`` checked with ONNX
Runtime, and a report (size, parameters, accuracy before and after on the run's
held-out data, estimated latency and memory fit on a device profile). Heavy libraries
(torch, onnx, onnxruntime) are imported only when used. ``format="litert"`` writes a
``model.tflite`` checked in the LiteRT interpreter, ``format="executorch"`` a ``model.pte``
checked in the ExecuTorch runtime (:mod:`fedge.export.formats`). See ``docs/compression.md``.
"""

from fedge.export.device import ALIASES, DeviceEstimate, device_profile, estimate
from fedge.export.onnx_io import QUANTIZE_MODES, compact, export_onnx, quantize, validate
from fedge.export.prune import NORMS, PruneResult, count_params, prune
from fedge.export.report import ExportReport
from fedge.export.run import ExportOptions, export_run, load_run

__all__ = [
    "ALIASES",
    "NORMS",
    "QUANTIZE_MODES",
    "DeviceEstimate",
    "ExportOptions",
    "ExportReport",
    "PruneResult",
    "compact",
    "count_params",
    "device_profile",
    "estimate",
    "export_onnx",
    "export_run",
    "load_run",
    "prune",
    "quantize",
    "validate",
]
