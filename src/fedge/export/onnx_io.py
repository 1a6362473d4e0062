"""ONNX export of a PyTorch model, its check with ONNX Runtime, and int8 quantisation.

* :func:`export_onnx` — ``torch.onnx.export`` (the dynamo exporter, with a dynamic batch
  dimension), then :func:`compact`: the exporter's debugging metadata (source stack
  traces, node names) is dropped and internal tensor names are shortened, which matters
  for a model of a few kilobytes and changes nothing in what it computes.
* :func:`validate` — the ONNX Runtime outputs must match PyTorch's within tolerance.
* :func:`quantize` — post-training int8 through ``onnxruntime.quantization``: *dynamic*
  (weights int8, activations quantised on the fly) or *static* (weights and activations
  int8, activation ranges calibrated on data; Jacob et al., "Quantization and Training
  of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018).

onnx, onnxruntime and torch are imported inside the functions: the CLI imports this
package at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ModelError
from fedge.export._runtime import latency_s, max_abs_diff

QUANTIZE_MODES = ("none", "int8", "dynamic", "static")
"""``int8`` is static quantisation calibrated on data (integer-only inference)."""
INPUT, OUTPUT = "x", "logits"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' and quantiser's own advice (warnings, log lines)."""
    loggers = [logging.getLogger(name) for name in ("", "torch", "torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _short(i: int) -> str:
    s = ""
    while True:
        s = _DIGITS[i % 36] + s
        i //= 36
        if not i:
            return s


def compact(model: Any) -> Any:
    """Drop metadata and doc strings and shorten internal tensor names, in place.

    Graph inputs and outputs keep their names. Graphs with subgraphs (If, Loop) are
    left with their names, since inner graphs may refer to outer ones.
    """
    g = model.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    has_subgraphs = any(a.g.ByteSize() or len(a.graphs) for n in g.node for a in n.attribute)
    names: dict[str, str] = {}
    skipped: list[str] = []

    def short(name: str) -> str:
        if has_subgraphs or not name or name in keep:
            return name
        if name not in names:
            candidate = _short(len(names) + len(skipped))
            while candidate in keep:
                skipped.append(candidate)
                candidate = _short(len(names) + len(skipped))
            names[name] = candidate
        return names[name]

    for t in g.initializer:
        t.name = short(t.name)
        t.doc_string = ""
        del t.metadata_props[:]
    for n in g.node:
        n.name = ""
        n.doc_string = ""
        del n.metadata_props[:]
        n.input[:] = [short(x) for x in n.input]
        n.output[:] = [short(x) for x in n.output]
    for v in [*g.input, *g.output]:
        v.doc_string = ""
        del v.metadata_props[:]
    del g.value_info[:]
    del g.metadata_props[:]
    del model.metadata_props[:]
    g.doc_string = model.doc_string = ""
    g.name = "fedge"
    used = {n.domain for n in g.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used or (o.domain == "ai.onnx" and "" in used)]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def export_onnx(module: Any, feature_shape: Sequence[int], path: Path) -> Path:
    """Export ``module`` (eval mode) to ``path`` with input ``x`` of any batch size."""
    import onnx
    import torch

    module.eval()
    sample = torch.zeros((2, *feature_shape), dtype=torch.float32)
    try:
        with _quiet():
            torch.onnx.export(
                module,
                (sample,),
                str(path),
                dynamo=True,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                optimize=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:
        raise ModelError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    model = compact(onnx.load(str(path)))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def predict(sess: Any, x: npt.NDArray[np.float32], batch: int = 512) -> npt.NDArray[np.float32]:
    """Run an ONNX Runtime session over ``x`` in batches; returns the logits."""
    out = [
        sess.run([OUTPUT], {INPUT: np.ascontiguousarray(x[i : i + batch], dtype=np.float32)})[0]
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def torch_logits(module: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    import torch

    module.eval()
    with torch.no_grad():
        out: npt.NDArray[np.float32] = module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
    return out


def accuracy(logits: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == y)) if len(y) else float("nan")


def validate(module: Any, path: Path, x: npt.NDArray[np.float32], *, atol: float = 1e-4, rtol: float = 1e-3) -> float:
    """Max absolute difference between ONNX Runtime and PyTorch outputs on ``x``.

    Raises :class:`ModelError` when any output differs beyond ``atol + rtol * |torch|``.
    """
    want = torch_logits(module, x)
    got = predict(session(path), x)
    return max_abs_diff(want, got, path.name, atol=atol, rtol=rtol, runtime="ONNX Runtime")


def _batches(x: npt.NDArray[np.float32], batch: int = 64) -> Iterator[dict[str, npt.NDArray[np.float32]]]:
    for i in range(0, len(x), batch):
        yield {INPUT: np.ascontiguousarray(x[i : i + batch], np.float32)}


def quantize(src: Path, dst: Path, mode: str, calibration: npt.NDArray[np.float32] | None = None) -> Path:
    """Write an int8 version of ``src`` to ``dst`` (``dynamic``, or ``static``/``int8``)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in QUANTIZE_MODES or mode == "none":
        raise ModelError(f"unknown quantisation {mode!r}; valid: {', '.join(QUANTIZE_MODES)}")
    with _quiet(), tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
        else:
            if calibration is None or len(calibration) == 0:
                raise ModelError("static int8 quantisation needs calibration data")
            batches = _batches(calibration)

            class Reader(CalibrationDataReader):  # type: ignore[misc]
                def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
                    return next(batches, None)

            quantize_static(
                str(pre),
                str(dst),
                Reader(),
                quant_format=QuantFormat.QOperator,
                per_channel=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    model = compact(onnx.load(str(dst)))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def host_latency_s(sess: Any, x: npt.NDArray[np.float32], repeats: int = 5) -> float:
    """Median seconds per sample of one-sample inference on this machine."""
    return latency_s(lambda one: sess.run([OUTPUT], {INPUT: one})[0], x, repeats)
