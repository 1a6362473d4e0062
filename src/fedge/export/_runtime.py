"""What every export format shares: a one-sample runner, its outputs over data, its latency,
its agreement with PyTorch.

A :data:`Runner` takes one batch-1 float32 sample and returns its logits, running the
exported file in its own runtime (ONNX Runtime, the LiteRT interpreter, the ExecuTorch
runtime), so
what is checked and timed is what a device would run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ModelError

Runner = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


def sample(feature_shape: Sequence[int]) -> Any:
    """The example input the converters trace with: one sample (devices infer one at a time)."""
    import torch

    return torch.zeros((1, *feature_shape), dtype=torch.float32)


def calibrate(graph: Any, calibration: npt.NDArray[np.float32]) -> None:
    """Feed the calibration samples one at a time through a PT2E-prepared graph."""
    import torch

    if len(calibration) == 0:
        raise ModelError("static int8 quantisation needs calibration data")
    with torch.no_grad():
        for row in calibration:
            graph(torch.from_numpy(np.ascontiguousarray(row[None], np.float32)))


def rows(x: npt.NDArray[np.float32]) -> Iterator[npt.NDArray[np.float32]]:
    for i in range(len(x)):
        yield np.ascontiguousarray(x[i : i + 1], np.float32)


def predict(run: Runner, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out = [run(r) for r in rows(x)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def latency_s(run: Runner, x: npt.NDArray[np.float32], repeats: int = 5) -> float:
    """Median seconds per sample of one-sample inference on this machine."""
    run(np.ascontiguousarray(x[:1], np.float32))
    n = min(len(x), 64)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            run(np.ascontiguousarray(x[i : i + 1], np.float32))
        times.append((time.perf_counter() - t0) / max(n, 1))
    return statistics.median(times)


def max_abs_diff(
    want: npt.NDArray[np.float32],
    got: npt.NDArray[np.float32],
    name: str,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    runtime: str = "runtime",
) -> float:
    """Max ``|got - want|``; a :class:`ModelError` beyond ``atol + rtol * |want|``."""
    if got.shape != want.shape:
        raise ModelError(f"{name}: {runtime} output shape {got.shape} != PyTorch {want.shape}")
    diff = np.abs(got - want)
    if not np.all(diff <= atol + rtol * np.abs(want)):
        raise ModelError(
            f"{name}: {runtime} outputs differ from PyTorch by up to {float(diff.max()):.3g} "
            f"(tolerance {atol} + {rtol}·|y|)"
        )
    return float(diff.max()) if diff.size else 0.0
