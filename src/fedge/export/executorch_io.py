"""ExecuTorch export (``.pte``) lowered to the XNNPACK backend, and its run in the ExecuTorch runtime.

* :func:`export_pte` — ``torch.export`` of a batch-1 sample, then
  ``to_edge_transform_and_lower`` with the XNNPACK partitioner (operators XNNPACK does not
  take stay on the portable CPU kernels), then ``to_executorch``. With ``calibration``,
  post-training static int8 first: the PT2E flow (``prepare_pt2e``, calibration,
  ``convert_pt2e``) with the XNNPACK quantizer, symmetric per-channel weights.
* :func:`load` — a :data:`~fedge.export._runtime.Runner` over ``executorch.runtime``.

executorch and torch are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ModelError
from fedge.core.extras import require
from fedge.export import _runtime
from fedge.export.onnx_io import _quiet

SUFFIX = ".pte"
RUNTIME = "ExecuTorch"


def export_pte(
    module: Any, feature_shape: Sequence[int], path: Path, calibration: npt.NDArray[np.float32] | None = None
) -> Path:
    """Write ``module`` (eval mode) to ``path``; int8 when ``calibration`` is given."""
    require("executorch", "fedge export --format executorch")
    import torch

    module.eval()
    x = _runtime.sample(feature_shape)
    try:
        with _quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            if calibration is not None:
                from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                    XNNPACKQuantizer,
                    get_symmetric_quantization_config,
                )
                from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

                quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
                graph = prepare_pt2e(torch.export.export(module, (x,)).module(), quantizer)
                _runtime.calibrate(graph, calibration)
                module = convert_pt2e(graph)
            program = torch.export.export(module, (x,))
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as exc:
        raise ModelError(f"ExecuTorch export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    path.write_bytes(lowered.buffer)
    return path


def load(path: Path) -> _runtime.Runner:
    """Run ``path``'s ``forward`` method in the ExecuTorch runtime, one sample a call."""
    require("executorch", "fedge export --format executorch")
    import torch

    with _quiet():
        from executorch.runtime import Runtime

    method = Runtime.get().load_program(path).load_method("forward")

    def run(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = method.execute([torch.from_numpy(x)])
        return np.asarray(out[0].detach().numpy(), dtype=np.float32)

    return run
