"""The formats ``fedge export`` writes, and the check of a non-ONNX export in its own runtime.

``onnx`` is handled by :mod:`fedge.export.onnx_io` (ONNX Runtime); ``litert`` (``.tflite``,
:mod:`~fedge.export.litert_io`) and ``executorch`` (``.pte``, :mod:`~fedge.export.executorch_io`)
go through :func:`convert_and_check`: the unpruned float32 model is exported as the size
and latency reference, the final (pruned, compacted) model is exported in float32 and
must match PyTorch on the held-out data, and with int8 the quantised file is what is
written, run and timed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ModelError
from fedge.export import _runtime, onnx_io

Format = Literal["onnx", "litert", "executorch"]
FORMATS: tuple[Format, ...] = ("onnx", "litert", "executorch")
RUNTIME_QUANTIZE = ("none", "int8", "static")
"""LiteRT and ExecuTorch take float32 or static int8 (calibrated, as ONNX's ``int8``)."""


@dataclass(frozen=True)
class Backend:
    suffix: str
    runtime: str
    export: Callable[..., Path]
    load: Callable[[Path], _runtime.Runner]


def backend(fmt: str) -> Backend:
    if fmt == "litert":
        from fedge.export import litert_io

        return Backend(litert_io.SUFFIX, litert_io.RUNTIME, litert_io.export_tflite, litert_io.load)
    if fmt == "executorch":
        from fedge.export import executorch_io

        return Backend(executorch_io.SUFFIX, executorch_io.RUNTIME, executorch_io.export_pte, executorch_io.load)
    raise ModelError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")


def file_name(fmt: str) -> str:
    return "model.onnx" if fmt == "onnx" else "model" + backend(fmt).suffix


def runtime_name(fmt: str) -> str:
    return "ONNX Runtime" if fmt == "onnx" else backend(fmt).runtime


@dataclass
class Checked:
    blob: bytes
    reference_bytes: int
    max_abs_diff: float
    logits: npt.NDArray[np.float32]
    latency_s_float32: float
    latency_s: float


def convert_and_check(
    fmt: str,
    module: Any,
    final_module: Any,
    feature_shape: Sequence[int],
    x_test: npt.NDArray[np.float32],
    tmp: Path,
    calibration: npt.NDArray[np.float32] | None,
) -> Checked:
    """Export, run in the format's runtime, compare with PyTorch, time; ``calibration`` means int8."""
    b = backend(fmt)
    reference = b.export(module, feature_shape, tmp / f"float32{b.suffix}")
    run_ref = b.load(reference)
    _runtime.max_abs_diff(onnx_io.torch_logits(module, x_test), _runtime.predict(run_ref, x_test), reference.name)
    exported = (
        b.export(final_module, feature_shape, tmp / f"pruned{b.suffix}") if final_module is not module else reference
    )
    run = b.load(exported)
    want = onnx_io.torch_logits(final_module, x_test)
    diff = _runtime.max_abs_diff(want, _runtime.predict(run, x_test), exported.name)
    final = exported
    if calibration is not None:
        final = b.export(final_module, feature_shape, tmp / f"int8{b.suffix}", calibration)
        run = b.load(final)
    return Checked(
        blob=final.read_bytes(),
        reference_bytes=reference.stat().st_size,
        max_abs_diff=diff,
        logits=_runtime.predict(run, x_test),
        latency_s_float32=_runtime.latency_s(run_ref, x_test),
        latency_s=_runtime.latency_s(run, x_test),
    )
