"""LiteRT export (``.tflite``) through litert-torch, and its run in the LiteRT interpreter.

* :func:`export_tflite` — ``litert_torch.convert`` of a batch-1 sample, then ``export``.
  With ``calibration``, post-training static int8 first: the PT2E flow (``prepare_pt2e``,
  calibration, ``convert_pt2e``) with litert-torch's ``PT2EQuantizer``, symmetric
  per-channel weights and int8 activations, handed to the converter as its quant config.
* :func:`load` — a :data:`~fedge.export._runtime.Runner` over ``ai_edge_litert``'s
  interpreter (one thread, its default XNNPACK delegate).

litert_torch, ai_edge_litert and torch are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ModelError
from fedge.core.extras import require
from fedge.export import _runtime
from fedge.export.onnx_io import _quiet

SUFFIX = ".tflite"
RUNTIME = "LiteRT"


@contextlib.contextmanager
def _no_progress() -> Iterator[None]:
    """The converter prints a progress tree on stdout; the CLI prints only the report."""
    with _quiet(), contextlib.redirect_stdout(io.StringIO()):
        yield


def export_tflite(
    module: Any, feature_shape: Sequence[int], path: Path, calibration: npt.NDArray[np.float32] | None = None
) -> Path:
    """Write ``module`` (eval mode) to ``path``; int8 when ``calibration`` is given."""
    litert_torch = require("litert_torch", "fedge export --format litert")
    import torch

    module.eval()
    x = _runtime.sample(feature_shape)
    try:
        with _no_progress():
            if calibration is None:
                edge = litert_torch.convert(module, (x,))
            else:
                from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
                from litert_torch.quantize.quant_config import QuantConfig
                from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

                quantizer = PT2EQuantizer().set_global(
                    get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
                )
                graph = prepare_pt2e(torch.export.export(module, (x,)).module(), quantizer)
                _runtime.calibrate(graph, calibration)
                graph = convert_pt2e(graph, fold_quantize=False)
                edge = litert_torch.convert(graph, (x,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
            edge.export(str(path))
    except Exception as exc:
        raise ModelError(f"LiteRT export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    return path


def load(path: Path) -> _runtime.Runner:
    """Run ``path``'s one signature in the LiteRT interpreter, one sample a call."""
    require("ai_edge_litert", "fedge export --format litert")
    from ai_edge_litert.interpreter import Interpreter

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    signatures = interpreter.get_signature_list()
    name = next(iter(signatures))
    (arg,) = signatures[name]["inputs"]
    (output,) = signatures[name]["outputs"]
    runner = interpreter.get_signature_runner(name)
    inp, outp = runner.get_input_details()[arg], runner.get_output_details()[output]

    def run(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # A fully int8 model takes and returns int8 tensors: quantise in, dequantise out.
        feed: Any = x
        if np.issubdtype(inp["dtype"], np.integer):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            feed = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(inp["dtype"])
        y = np.asarray(runner(**{arg: feed})[output])
        if np.issubdtype(outp["dtype"], np.integer):
            scale, zero = outp["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, dtype=np.float32)

    return run
