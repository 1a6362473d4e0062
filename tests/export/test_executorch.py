"""``--format executorch``: the real converter, the file run in its own runtime, int8, pruning, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from fedge.cli.main import cli
from fedge.export import _runtime
from fedge.export.formats import backend
from fedge.export.onnx_io import torch_logits
from fedge.export.prune import prune

FORMAT = "executorch"


def _run(module: Any, path: Path, calibration: np.ndarray | None = None) -> tuple[Any, int]:
    b = backend(FORMAT)
    out = b.export(module, (64,), path, calibration)
    return b.load(out), out.stat().st_size


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_float_export_runs_in_its_runtime_and_matches_pytorch(
    name: str, digits_models: dict[str, Any], tmp_path: Path
) -> None:
    module, x = digits_models[name], digits_models["x_test"]
    run, size = _run(module, tmp_path / "m.pte")
    got = _runtime.predict(run, x)
    want = torch_logits(module, x)
    assert size > 0 and got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 1e-4
    assert np.mean(np.argmax(got, 1) == digits_models["y_test"]) > 0.85


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_int8_export_agrees_with_float_and_is_smaller(name: str, digits_models: dict[str, Any], tmp_path: Path) -> None:
    module, x = digits_models[name], digits_models["x_test"]
    run_f, size_f = _run(module, tmp_path / "f.pte")
    run_q, size_q = _run(module, tmp_path / "q.pte", digits_models["x_train"][:256])
    agree = np.mean(np.argmax(_runtime.predict(run_q, x), 1) == np.argmax(_runtime.predict(run_f, x), 1))
    assert agree >= 0.95
    assert size_q < size_f


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_pruned_export_is_smaller_and_matches_the_pruned_model(
    name: str, digits_models: dict[str, Any], tmp_path: Path
) -> None:
    module, x = digits_models[name], digits_models["x_test"]
    pruned = prune(module, 0.5).module
    _, size_full = _run(module, tmp_path / "full.pte")
    run, size_pruned = _run(pruned, tmp_path / "pruned.pte")
    assert size_pruned < size_full
    assert float(np.abs(_runtime.predict(run, x) - torch_logits(pruned, x)).max()) <= 1e-4


@pytest.mark.integration
def test_cli_writes_a_checked_file_and_the_catalog_verdicts(digits_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    args = ["export", str(digits_run), "--format", FORMAT, "--quantize", "int8", "--prune", "0.5", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == FORMAT and report["model_file"] == "model.pte"
    assert report["onnx_bytes"] == (out / "model.pte").stat().st_size
    assert report["onnx_bytes"] < report["float32_onnx_bytes"]
    assert report["max_abs_diff"] <= 1e-4 and report["host_latency_ms"] > 0
    assert report["catalog"] and all(isinstance(e["fits"], bool) for e in report["catalog"])
    assert "catalog" in result.output and "pi4" in result.output


def test_missing_converter_is_one_line_naming_the_install(
    digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "executorch", None)
    args = ["export", str(digits_run), "--format", FORMAT, "--quantize", "none", "-o", str(tmp_path / "x")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "pip install 'fedge[executorch]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
