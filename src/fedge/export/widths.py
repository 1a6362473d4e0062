"""One model file per HeteroFL width class: what each device class of a ``heterofl`` run runs.

A HeteroFL run trains one global model whose leading-corner blocks are the sub-models its
devices hold (:mod:`fedge.strategies.heterofl`). ``fedge export`` of such a run writes, next
to the whole model, ``model-w<ratio>.onnx`` for every width ratio the run gave a device:
the sub-model's blocks loaded into the built-in model of that width (with its ``1 / width``
scaler), exported to ONNX and checked in ONNX Runtime against PyTorch on the run's held-out
data, so a device of that class runs exactly the model it trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ModelError
from fedge.export import onnx_io


@dataclass
class WidthModel:
    """One width class's exported file and its checks."""

    ratio: float
    file: str
    clients: int
    """How many of the run's clients hold this width."""
    params: int
    onnx_bytes: int
    accuracy_onnx: float
    """The file in ONNX Runtime on the run's held-out data."""
    max_abs_diff: float
    """ONNX Runtime vs PyTorch outputs of this sub-model."""


def file_name(ratio: float) -> str:
    """``model-w0.5.onnx``: the file of width class ``ratio``."""
    return f"model-w{ratio:g}.onnx"


def width_classes(exp: Any, data: Any) -> dict[float, int]:
    """The width ratios a heterofl run gave its clients (from its devices, as the run chose them), and how
    many clients hold each, widest first."""
    from fedge.federation import build

    built = build(exp, dataset=data)
    widths: dict[int, float] = built.strategy.widths  # type: ignore[attr-defined]
    counts: dict[float, int] = {}
    for cid in range(data.num_clients):
        r = widths.get(cid, 1.0)
        counts[r] = counts.get(r, 0) + 1
    return dict(sorted(counts.items(), reverse=True))


def export_widths(
    exp: Any,
    data: Any,
    module: Any,
    tmp: Path,
    x_test: npt.NDArray[np.float32],
    y_test: npt.NDArray[np.int64],
) -> list[tuple[WidthModel, bytes]]:
    """Each width class's checked ONNX model of the trained ``module``, with its bytes."""
    import torch

    from fedge.clients.torch_learner import get_params, set_params
    from fedge.core.params import ParamSpec
    from fedge.export.prune import count_params
    from fedge.models import torch_module
    from fedge.strategies.heterofl import sub_model, width_shapes

    if exp.model.name not in ("mlp", "cnn"):
        raise ModelError(f"a heterofl run's width classes need the built-in mlp or cnn, not {exp.model.name!r}")
    full = get_params(module)
    shapes = ParamSpec.of(full).shapes
    out: list[tuple[WidthModel, bytes]] = []
    for ratio, clients in width_classes(exp, data).items():
        torch.manual_seed(exp.seed)
        narrow = torch_module(exp.model.name, data.feature_shape, data.num_classes, exp.model.hidden, width=ratio)
        set_params(narrow, sub_model(full, width_shapes(shapes, ratio, exp.model.name)))
        narrow.eval()
        path = onnx_io.export_onnx(narrow, data.feature_shape, tmp / file_name(ratio))
        diff = onnx_io.validate(narrow, path, x_test)
        acc = onnx_io.accuracy(onnx_io.predict(onnx_io.session(path), x_test), y_test)
        blob = path.read_bytes()
        model = WidthModel(ratio, file_name(ratio), clients, count_params(narrow), len(blob), acc, diff)
        out.append((model, blob))
    return out
