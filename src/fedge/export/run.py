"""Export a finished run: rebuild its model, prune, fine-tune, quantise, check, report.

The run folder's ``config.toml`` rebuilds the model (:func:`fedge.models.torch_module`)
and the dataset (same seed, same split), so accuracy before and after is measured on the
run's own held-out data; static quantisation is calibrated on clients' training data.
Outputs (``model.onnx``, ``report.json``, ``report.txt``) are each written to a temporary
name and renamed into place, so a failed export leaves no half-written file.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import DataError, ModelError
from fedge.export import formats, onnx_io, widths
from fedge.export.device import DeviceEstimate, device_profile, estimate
from fedge.export.prune import NORMS, count_params, prune
from fedge.export.report import ExportReport

CALIBRATION_SAMPLES = 256


@dataclass
class ExportOptions:
    device: str | None = None
    quantize: str = "int8"
    prune: float = 0.0
    norm: str = "l1"
    finetune_rounds: int = 0
    output: str | None = None
    profiles: str | None = None
    format: str = "onnx"


def _check(opts: ExportOptions) -> None:
    if opts.format not in formats.FORMATS:
        raise ModelError(f"unknown export format {opts.format!r}; valid: {', '.join(formats.FORMATS)}")
    if opts.format != "onnx" and opts.quantize not in formats.RUNTIME_QUANTIZE:
        raise ModelError(f"--format {opts.format} takes --quantize none or int8, not {opts.quantize!r}")
    if opts.quantize not in onnx_io.QUANTIZE_MODES:
        raise ModelError(f"unknown quantisation {opts.quantize!r}; valid: {', '.join(onnx_io.QUANTIZE_MODES)}")
    if opts.norm not in NORMS:
        raise ModelError(f"unknown pruning norm {opts.norm!r}; valid: {', '.join(NORMS)}")
    if not (isinstance(opts.prune, int | float) and 0.0 <= opts.prune < 1.0):
        raise ModelError(f"pruning ratio must be in [0, 1), got {opts.prune!r}: 1 would remove every layer")
    if opts.finetune_rounds < 0:
        raise ModelError(f"fine-tuning rounds must be >= 0, got {opts.finetune_rounds}")
    if opts.finetune_rounds and not opts.prune:
        raise ModelError("fine-tuning rounds follow pruning: pass a pruning ratio as well")


def load_run(run_dir: Path) -> tuple[Any, Any, Any]:
    """``(experiment, dataset, module)`` of a run folder, with the trained weights loaded."""
    import torch

    from fedge.clients.torch_learner import set_params
    from fedge.config import load
    from fedge.experiment import load_params_npz
    from fedge.federation import load_dataset
    from fedge.models import torch_module

    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder")
    if not (run_dir / "config.toml").is_file():
        raise DataError(f"{run_dir}: not a fedge run folder (no config.toml)")
    pt, npz = run_dir / "model.pt", run_dir / "model.npz"
    if not pt.is_file() and not npz.is_file():
        raise DataError(f"{run_dir}: the run folder has no model (model.pt or model.npz)")
    exp = load(str(run_dir / "config.toml"))
    data = load_dataset(exp)
    torch.manual_seed(exp.seed)
    module = torch_module(exp.model.name, data.feature_shape, data.num_classes, exp.model.hidden)
    try:
        if pt.is_file():
            module.load_state_dict(torch.load(pt, map_location="cpu", weights_only=True))
        else:
            set_params(module, load_params_npz(npz))
    except (RuntimeError, ModelError, ValueError, OSError, EOFError, KeyError, pickle.UnpicklingError) as exc:
        src = pt if pt.is_file() else npz
        raise DataError(
            f"{src}: does not hold weights for the configured {exp.model.name} model: {_reason(exc)}"
        ) from None
    module.eval()
    return exp, data, module


def _reason(exc: BaseException) -> str:
    """One line of why a model file was refused; for the weights-only loader, what it refused."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if isinstance(exc, pickle.UnpicklingError):
        after = text.partition("Unpickler error:")[2].splitlines()
        detail = next((line.strip() for line in after if line.strip()), "not a plain weights file")
        return f"the safe (weights-only) loader refused it: {detail.split('. ')[0]}"[:240]
    if isinstance(exc, KeyError | EOFError):
        return f"not a PyTorch weights file ({type(exc).__name__})"
    return (next((line.strip() for line in text.splitlines() if line.strip()), "") or type(exc).__name__)[:240]


def calibration_data(data: Any, seed: int, n: int = CALIBRATION_SAMPLES) -> npt.NDArray[np.float32]:
    """A seeded sample of the clients' training inputs (never the held-out data)."""
    idx = np.asarray(data.train.values)
    pick = np.random.default_rng([seed, 0xCA1]).permutation(len(idx))[:n]
    return np.asarray(data.x[idx[pick]], dtype=np.float32)


def finetune(exp: Any, data: Any, module: Any, hidden: list[int], rounds: int) -> Any:
    """Federated fine-tuning of a pruned mlp: ``rounds`` more rounds of the run's setup."""
    import copy

    from fedge.clients.torch_learner import get_params, set_params
    from fedge.federation import build, execute

    if exp.model.name != "mlp":
        raise ModelError(
            f"federated fine-tuning after pruning needs an mlp (its widths are "
            f"configurable); the run's model is {exp.model.name!r}"
        )
    ft = copy.deepcopy(exp)
    ft.model.hidden = list(hidden)
    ft.model.framework = "torch"
    ft.rounds = rounds
    built = build(ft, dataset=data)
    built.initial = get_params(module)
    result = execute(built)
    set_params(module, result.state.params)
    return module


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_run(run_dir: str | Path, opts: ExportOptions | None = None) -> tuple[ExportReport, Path]:
    """Export a run folder's model; returns the report and the folder it was written to."""
    from fedge.devices import catalog
    from fedge.devices.cost import count_torch

    opts = opts or ExportOptions()
    _check(opts)
    run = Path(run_dir)
    profile = device_profile(opts.device, opts.profiles) if opts.device else None
    exp, data, module = load_run(run)
    heterofl = exp.strategy.name == "heterofl"
    if heterofl and (opts.prune or opts.format != "onnx"):
        raise ModelError(
            "a heterofl run exports one float32 ONNX model per width class (its trained sub-models): "
            "use --format onnx without --prune"
        )
    x_test, y_test = data.central()
    x_test = np.asarray(x_test, dtype=np.float32)
    if len(y_test) == 0:
        raise DataError(f"{run}: the run's dataset has no held-out data to measure accuracy on")
    acc_torch = onnx_io.accuracy(onnx_io.torch_logits(module, x_test), y_test)
    params_before = count_params(module)
    hidden: list[int] = list(exp.model.hidden) if exp.model.name == "mlp" else []
    final_module = module
    if opts.prune > 0:
        pr = prune(module, opts.prune, opts.norm)
        final_module = pr.module
        if exp.model.name == "mlp":
            hidden = pr.widths()
        if opts.finetune_rounds:
            final_module = finetune(exp, data, final_module, hidden, opts.finetune_rounds)
    acc_pruned = onnx_io.accuracy(onnx_io.torch_logits(final_module, x_test), y_test)
    out = Path(opts.output) if opts.output else run / "export"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if opts.format != "onnx":
            calib = calibration_data(data, exp.seed) if opts.quantize != "none" else None
            chk = formats.convert_and_check(opts.format, module, final_module, data.feature_shape, x_test, tmp, calib)
            blob, ref_bytes, max_diff = chk.blob, chk.reference_bytes, chk.max_abs_diff
            acc_onnx = onnx_io.accuracy(chk.logits, y_test)
            lat_float, lat = chk.latency_s_float32, chk.latency_s
        else:
            reference = onnx_io.export_onnx(module, data.feature_shape, tmp / "float32.onnx")
            onnx_io.validate(module, reference, x_test)
            exported = (
                onnx_io.export_onnx(final_module, data.feature_shape, tmp / "pruned.onnx")
                if final_module is not module
                else reference
            )
            max_diff = onnx_io.validate(final_module, exported, x_test)
            final = exported
            if opts.quantize != "none":
                calib = calibration_data(data, exp.seed) if opts.quantize != "dynamic" else None
                final = onnx_io.quantize(exported, tmp / "int8.onnx", opts.quantize, calib)
            sess = onnx_io.session(final)
            acc_onnx = onnx_io.accuracy(onnx_io.predict(sess, x_test), y_test)
            lat_float = onnx_io.host_latency_s(onnx_io.session(reference), x_test)
            lat = onnx_io.host_latency_s(sess, x_test)
            blob = final.read_bytes()
            ref_bytes = reference.stat().st_size
        classes = widths.export_widths(exp, data, module, tmp, x_test, y_test) if heterofl else []
    cost = count_torch(final_module, data.feature_shape)

    def fit(p: Any) -> DeviceEstimate:
        return estimate(
            p,
            forward_flops=cost.forward_flops,
            activations=cost.activations,
            model_bytes=len(blob),
            int8=opts.quantize != "none",
        )

    est = fit(profile) if profile is not None else None
    report = ExportReport(
        run_dir=str(run),
        model=exp.model.name,
        quantize=opts.quantize,
        prune_ratio=float(opts.prune),
        prune_norm=opts.norm,
        finetune_rounds=opts.finetune_rounds,
        params_before=params_before,
        params_after=count_params(final_module),
        float32_onnx_bytes=ref_bytes,
        onnx_bytes=len(blob),
        size_ratio=ref_bytes / len(blob) if blob else math.nan,
        accuracy_torch=acc_torch,
        accuracy_pruned=acc_pruned,
        accuracy_onnx=acc_onnx,
        max_abs_diff=max_diff,
        held_out=len(y_test),
        host_latency_ms_float32=1e3 * lat_float,
        host_latency_ms=1e3 * lat,
        device=est,
        hidden=hidden,
        format=opts.format,
        runtime=formats.runtime_name(opts.format),
        model_file=formats.file_name(opts.format),
        catalog=[fit(p) for p in catalog(opts.profiles or None).values()],
        width_models=[m for m, _ in classes],
    )
    _write_atomic(out / report.model_file, blob)
    for m, data_bytes in classes:
        _write_atomic(out / m.file, data_bytes)
    _write_atomic(out / "report.json", report.dumps().encode())
    _write_atomic(out / "report.txt", report.to_text().encode())
    return report, out
