"""Export runtimes: the digits MLP and small CNN as ONNX, LiteRT and ExecuTorch files, float32 and int8.

Both models are trained in this run on scikit-learn's digits (1,200 samples, 60 full-batch
Adam steps; the remaining 597 are held out). Each format is exported with ``fedge
export``'s converters and run in its own runtime (ONNX Runtime, the LiteRT interpreter,
the ExecuTorch runtime with XNNPACK), one thread, one sample at a time. Per model and
format it reports the file bytes, the median latency per sample on this CPU, the max
absolute difference of the logits from PyTorch's and the held-out accuracy; the
reference is the PyTorch model measured in the same run (``torch`` entry). int8 is static,
calibrated on 256 training samples. A format whose package is missing is reported as
``{"skipped": "pip install ..."}``.

Usage: ``python benchmarks/export_runtimes.py``. The last line of output is one JSON object.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit

from fedge.core.extras import MissingExtraError
from fedge.export import _runtime, onnx_io
from fedge.export.formats import backend
from fedge.models import torch_module


def _train(name: str, x: np.ndarray, y: np.ndarray) -> Any:
    torch.manual_seed(0)
    module = torch_module(name, (64,), 10, [32])
    opt = torch.optim.Adam(module.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(xt), yt).backward()
        opt.step()
    return module.eval()


def _figures(run: _runtime.Runner, size: int, want: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    got = _runtime.predict(run, x)
    return {
        "bytes": size,
        "latency_us_per_sample": round(1e6 * _runtime.latency_s(run, x), 2),
        "max_abs_diff": float(np.abs(got - want).max()),
        "accuracy": round(onnx_io.accuracy(got, y), 4),
    }


def main() -> None:
    from sklearn.datasets import load_digits

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, y_train, x_test, y_test = x[:1200], y[:1200], x[1200:], y[1200:]
    calib = x_train[:256]
    record: dict[str, Any] = {"workload": "export_runtimes", "backend": "cpu, 1 thread", "held_out": len(y_test)}
    record["models"] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in ("mlp", "cnn"):
            module = _train(name, x_train, y_train)
            want = onnx_io.torch_logits(module, x_test)

            def torch_run(r: np.ndarray, m: Any = module) -> np.ndarray:
                return onnx_io.torch_logits(m, r)

            torch_bytes = sum(p.numel() * p.element_size() for p in module.state_dict().values())
            res: dict[str, Any] = {"torch": _figures(torch_run, torch_bytes, want, x_test, y_test)}
            f32 = onnx_io.export_onnx(module, (64,), tmp / f"{name}.onnx")
            q8 = onnx_io.quantize(f32, tmp / f"{name}.int8.onnx", "int8", calib)
            for key, path in (("onnx", f32), ("onnx_int8", q8)):
                sess = onnx_io.session(path)

                def ort_run(r: np.ndarray, s: Any = sess) -> np.ndarray:
                    return onnx_io.predict(s, r)

                res[key] = _figures(ort_run, path.stat().st_size, want, x_test, y_test)
            for fmt in ("litert", "executorch"):
                try:
                    b = backend(fmt)
                    for key, cal in ((fmt, None), (f"{fmt}_int8", calib)):
                        path = b.export(module, (64,), tmp / f"{name}.{key}{b.suffix}", cal)
                        res[key] = _figures(b.load(path), path.stat().st_size, want, x_test, y_test)
                except MissingExtraError as exc:
                    res[fmt] = {"skipped": str(exc)}
            record["models"][name] = res
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    emit(record)


if __name__ == "__main__":
    main()
