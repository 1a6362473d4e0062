"""ONNX export checked by ONNX Runtime, compaction, and int8 quantisation."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fedge.core.errors import ModelError
from fedge.export.onnx_io import (
    accuracy,
    compact,
    export_onnx,
    predict,
    quantize,
    session,
    torch_logits,
    validate,
)
from fedge.models import torch_module


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, np.ndarray]:
    # A trained model: an untrained one's logits are near-ties, so whether int8 keeps its
    # argmax depends on rounding noise and on the CPU's int8 kernels, not on quantisation.
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data[:600] / 16.0).astype(np.float32)
    y = torch.as_tensor(digits.target[:600])
    torch.manual_seed(0)
    module = torch_module("mlp", (64,), 10, [64])
    opt = torch.optim.Adam(module.parameters(), lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(torch.as_tensor(x)), y).backward()
        opt.step()
    module.eval()
    path = export_onnx(module, (64,), tmp_path_factory.mktemp("onnx") / "m.onnx")
    return module, path, x[:200]


def test_onnx_runtime_matches_pytorch_for_any_batch_size(exported) -> None:
    module, path, x = exported
    assert validate(module, path, x) < 1e-4
    sess = session(path)
    for n in (1, 3, 200):
        np.testing.assert_allclose(predict(sess, x[:n]), torch_logits(module, x[:n]), atol=1e-4, rtol=1e-3)


def test_validate_refuses_a_model_that_computes_something_else(exported) -> None:
    _, path, x = exported
    other = torch_module("mlp", (64,), 10, [64])
    with pytest.raises(ModelError, match="differ from PyTorch"):
        validate(other, path, x)


def test_compact_keeps_what_the_model_computes(exported, tmp_path: Path) -> None:
    _, path, x = exported
    model = onnx.load(str(path))
    assert not model.metadata_props and all(not n.name for n in model.graph.node)
    again = tmp_path / "again.onnx"
    onnx.save(compact(model), str(again))
    np.testing.assert_array_equal(predict(session(again), x), predict(session(path), x))
    assert [i.name for i in model.graph.input] == ["x"]


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_model_is_smaller_and_agrees_with_float(exported, tmp_path: Path, mode: str) -> None:
    module, path, x = exported
    calib = x[:64] if mode == "static" else None
    q = quantize(path, tmp_path / f"{mode}.onnx", mode, calib)
    assert q.stat().st_size * 3 < path.stat().st_size
    int8_types = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    assert any(t.data_type in int8_types for t in onnx.load(str(q)).graph.initializer)
    ref = np.argmax(torch_logits(module, x), axis=1)
    agree = accuracy(predict(session(q), x), ref)
    assert agree > 0.95


def test_static_quantisation_needs_calibration_data(exported, tmp_path: Path) -> None:
    _, path, _ = exported
    with pytest.raises(ModelError, match="calibration"):
        quantize(path, tmp_path / "s.onnx", "static", None)
    with pytest.raises(ModelError, match="unknown quantisation 'int4'"):
        quantize(path, tmp_path / "s.onnx", "int4")


def test_compact_never_reuses_the_input_or_output_names(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    n = 80
    names = ["x", *[f"hidden_{i}" for i in range(n - 1)], "logits"]
    nodes = [helper.make_node("Relu", [a], [b]) for a, b in itertools.pairwise(names)]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
    )
    model = compact(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.checker.check_model(model)
    outputs = [o for node in model.graph.node for o in node.output]
    assert len(set(outputs)) == len(outputs) and outputs[-1] == "logits"
    assert "x" not in outputs[:-1]
    path = tmp_path / "chain.onnx"
    onnx.save(model, str(path))
    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    np.testing.assert_array_equal(predict(session(path), x), [[0.0, 0.0, 2.0]])
