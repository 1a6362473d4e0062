"""``fedge export`` on a real run folder: files, report, device estimate, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from fedge.cli.main import cli
from fedge.core.errors import ConfigError, DataError, ModelError
from fedge.export.device import device_profile, estimate
from fedge.export.run import ExportOptions, export_run


@pytest.mark.integration
def test_export_with_pruning_and_int8_writes_a_checked_model_and_report(digits_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    result = CliRunner().invoke(
        cli,
        [
            "export",
            str(digits_run),
            "--device",
            "jetson-orin-nano",
            "--quantize",
            "int8",
            "--prune",
            "0.5",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "fits" in result.output
    report = json.loads((out / "report.json").read_text())
    model = out / "model.onnx"
    assert report["onnx_bytes"] == model.stat().st_size
    assert report["params_after"] < report["params_before"]
    assert report["hidden"] == [8]
    assert report["float32_onnx_bytes"] / report["onnx_bytes"] == pytest.approx(report["size_ratio"])
    assert report["size_ratio"] > 4
    assert 0 <= report["accuracy_onnx"] <= 1 and report["held_out"] > 0
    assert report["device"]["device"] == "orin-nano" and report["device"]["fits"] is True
    assert report["device"]["latency_ms_per_sample"] > 0
    onnx.checker.check_model(onnx.load(str(model)))
    assert "ONNX Runtime" in (out / "report.txt").read_text()


@pytest.mark.integration
def test_float_export_keeps_the_accuracy_and_fine_tuning_runs_rounds(digits_run: Path, tmp_path: Path) -> None:
    rep, _ = export_run(digits_run, ExportOptions(quantize="none", output=str(tmp_path / "f")))
    assert rep.accuracy_onnx == pytest.approx(rep.accuracy_torch, abs=1e-9)
    assert rep.size_ratio == pytest.approx(1.0)
    ft, _ = export_run(
        digits_run, ExportOptions(quantize="none", prune=0.5, finetune_rounds=1, output=str(tmp_path / "ft"))
    )
    assert ft.hidden == [8] and ft.finetune_rounds == 1
    assert ft.accuracy_pruned != rep.accuracy_pruned


def test_run_folder_without_model_is_a_one_line_error(digits_run: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.toml").write_text((digits_run / "config.toml").read_text())
    with pytest.raises(DataError, match="has no model"):
        export_run(bare)
    with pytest.raises(DataError, match="not a fedge run folder"):
        export_run(tmp_path)
    result = CliRunner().invoke(cli, ["export", str(bare)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {bare}: the run folder has no model (model.pt or model.npz)"]


def test_bad_options_are_refused_before_any_work(digits_run: Path) -> None:
    with pytest.raises(ModelError, match=r"pruning ratio must be in \[0, 1\)"):
        export_run(digits_run, ExportOptions(prune=1.0))
    with pytest.raises(ConfigError, match="unknown device 'jetson-xyz'"):
        export_run(digits_run, ExportOptions(device="jetson-xyz"))
    with pytest.raises(ModelError, match="follow pruning"):
        export_run(digits_run, ExportOptions(finetune_rounds=2))


def test_pruning_the_only_hidden_layer_away_is_refused(digits_run: Path) -> None:
    with pytest.raises(ModelError, match="would remove the whole of layer 1"):
        export_run(digits_run, ExportOptions(prune=0.97))


def test_device_estimate_uses_int8_throughput_and_memory() -> None:
    pi = device_profile("raspberry-pi-4")
    assert pi.name == "pi4"
    est = estimate(pi, forward_flops=10**9, activations=0, model_bytes=0, int8=False)
    assert est.latency_ms_per_sample == pytest.approx(1e3 * 1e9 / pi.flops_fp32)
    huge = estimate(pi, forward_flops=1, activations=0, model_bytes=int(pi.ram_mib * 2**20) + 1, int8=True)
    assert huge.fits is False
    orin = device_profile("orin-nano")
    if orin.flops_int8 is not None:
        e8 = estimate(orin, forward_flops=10**9, activations=0, model_bytes=0, int8=True)
        assert e8.precision == "int8" and e8.latency_ms_per_sample == pytest.approx(1e12 / orin.flops_int8)
    assert np.isfinite(est.memory_needed_mib)
