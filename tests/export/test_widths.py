"""``fedge export`` of a HeteroFL run: one ONNX model per width class, each run in ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedge.cli.main import cli

pytestmark = pytest.mark.integration

HALF_MEM = """
[half-mem]
description = "memory for the half-width model of a 16-unit MLP on digits, not the whole one"
flops_fp32 = 1e9
ram_mib = 0.01
uplink_mbps = 10
downlink_mbps = 10
latency_ms = 10
power_train_w = 1.0
source = "test"
"""


@pytest.fixture(scope="module")
def heterofl_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished digits run of HeteroFL whose devices hold widths 1 and 1/2."""
    from fedge.config.schema import from_dict
    from fedge.experiment import run_experiment

    root = tmp_path_factory.mktemp("heterofl")
    (root / "profiles.toml").write_text(HALF_MEM)
    exp = from_dict(
        {
            "seed": 1,
            "rounds": 2,
            "data": {"dataset": "digits", "num_clients": 6},
            "model": {"name": "mlp", "hidden": [16]},
            "strategy": {"name": "heterofl"},
            "heterofl": {"ratios": [1.0, 0.5]},
            "training": {"clients_per_round": 6, "local_epochs": 1},
            "devices": {
                "enabled": True,
                "profiles": str(root / "profiles.toml"),
                "fleet": {"orin-nano": 0.5, "half-mem": 0.5},
            },
        }
    )
    run_experiment(exp, output=str(root / "run"))
    return root / "run"


def test_each_width_class_gets_its_own_model_file_equal_to_torch_in_onnx_runtime(
    heterofl_run: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort
    import torch

    from fedge.clients.torch_learner import get_params, set_params
    from fedge.core.params import ParamSpec
    from fedge.export.run import load_run
    from fedge.models import torch_module
    from fedge.strategies.heterofl import sub_model, width_shapes

    out = tmp_path / "exp"
    result = CliRunner().invoke(cli, ["export", str(heterofl_run), "--quantize", "none", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    classes = {m["ratio"]: m for m in report["width_models"]}
    assert sorted(classes) == [0.5, 1.0]
    assert sum(m["clients"] for m in classes.values()) == 6
    assert classes[0.5]["params"] < classes[1.0]["params"]
    _, data, module = load_run(heterofl_run)
    x, _ = data.central()
    x = np.asarray(x, dtype=np.float32)
    full = get_params(module)
    for ratio, m in classes.items():
        path = out / f"model-w{ratio:g}.onnx"
        assert m["file"] == path.name and path.stat().st_size == m["onnx_bytes"]
        # the want: the trained global model's corner blocks in a torch model of that width, built here
        narrow = torch_module("mlp", data.feature_shape, data.num_classes, [16], width=ratio)
        set_params(narrow, sub_model(full, width_shapes(ParamSpec.of(full).shapes, ratio, "mlp")))
        with torch.no_grad():
            want = narrow.eval()(torch.from_numpy(x)).numpy()
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
        assert m["accuracy_onnx"] == pytest.approx(float(np.mean(got.argmax(1) == data.central()[1])))
    assert "width classes" in (out / "report.txt").read_text()


def test_pruning_a_heterofl_run_is_refused_in_one_line(heterofl_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", str(heterofl_run), "--prune", "0.5", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "one float32 ONNX model per width class" in result.output
    assert not (tmp_path / "x").exists()
