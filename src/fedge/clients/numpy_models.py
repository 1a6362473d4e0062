"""NumPy-only models for devices that cannot run PyTorch (a Pi Zero, a microcontroller gateway).

Multinomial logistic regression and a one-hidden-layer ReLU MLP with hand-derived
gradients of the mean cross-entropy. Parameters use PyTorch's ``nn.Linear`` layout
(``weight`` of shape ``(out, in)``, then ``bias``), so a NumPy device can join a
federation of PyTorch devices training the same architecture. Training and evaluation run
in :class:`~fedge.clients.kernel.DenseKernel`, whose SGD step follows ``torch.optim.SGD``
(weight decay, then momentum buffer, then ``p -= lr * buf``); :meth:`NumpyMLP.forward` and
:meth:`NumpyMLP.grads` remain as the readable reference of the same maths.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedge.clients.base import TrainResult
from fedge.clients.kernel import DenseKernel
from fedge.core.errors import ModelError
from fedge.core.params import Params
from fedge.core.types import TrainConfig

F32 = npt.NDArray[np.float32]


def softmax_xent(logits: F32, y: npt.NDArray[np.int64]) -> tuple[float, F32]:
    """Mean cross-entropy and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.mean(np.log(p[np.arange(n), y] + 1e-12)))
    grad = p
    grad[np.arange(n), y] -= 1.0
    return loss, (grad / n).astype(np.float32)


def linear_init(rng: np.random.Generator, fan_in: int, fan_out: int) -> tuple[F32, F32]:
    """``nn.Linear``'s default: uniform in ±1/sqrt(fan_in) for weight and bias."""
    bound = 1.0 / np.sqrt(fan_in)
    w = rng.uniform(-bound, bound, size=(fan_out, fan_in)).astype(np.float32)
    b = rng.uniform(-bound, bound, size=fan_out).astype(np.float32)
    return w, b


class NumpyMLP:
    """``in -> hidden[0] -> ... -> out`` with ReLU; no hidden layer is logistic regression.

    ``scale`` multiplies every hidden activation (HeteroFL's scaler, ``1 / width`` in a sub-model).
    """

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (64,), scale: float = 1.0) -> None:
        if in_features <= 0 or num_classes <= 1:
            raise ModelError(f"bad model size: {in_features} inputs, {num_classes} classes")
        self.sizes = [in_features, *hidden, num_classes]
        self.scale = float(scale)
        self.kernel = DenseKernel(self.sizes, scale)

    @property
    def num_classes(self) -> int:
        return self.sizes[-1]

    def init_params(self, seed: int) -> Params:
        rng = np.random.default_rng(seed)
        out: Params = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            w, b = linear_init(rng, fan_in, fan_out)
            out += [w, b]
        return out

    def forward(self, params: Params, x: F32) -> tuple[F32, list[F32]]:
        acts = [x]
        h = x
        n_layers = len(params) // 2
        for i in range(n_layers):
            h = h @ params[2 * i].T + params[2 * i + 1]
            if i < n_layers - 1:
                h = np.maximum(h, 0.0)
                if self.scale != 1:
                    h = h * np.float32(self.scale)
            acts.append(h)
        return h, acts

    def grads(self, params: Params, x: F32, y: npt.NDArray[np.int64]) -> tuple[float, Params]:
        logits, acts = self.forward(params, x)
        loss, g = softmax_xent(logits, y)
        n_layers = len(params) // 2
        out: Params = [np.empty(0, np.float32)] * len(params)
        for i in reversed(range(n_layers)):
            a_in = acts[i]
            out[2 * i] = (g.T @ a_in).astype(np.float32)
            out[2 * i + 1] = g.sum(axis=0).astype(np.float32)
            if i > 0:
                g = (g @ params[2 * i]) * (acts[i] > 0)
                if self.scale != 1:
                    g = g * np.float32(self.scale)
        return loss, out

    def train(
        self,
        params: Params,
        x: npt.NDArray[np.generic],
        y: npt.NDArray[np.int64],
        cfg: TrainConfig,
        rng: np.random.Generator,
    ) -> TrainResult:
        return self.kernel.train(params, x, y, cfg, rng)

    def evaluate(self, params: Params, x: npt.NDArray[np.generic], y: npt.NDArray[np.int64]) -> tuple[float, float]:
        return self.kernel.evaluate(params, x, y)


class NumpyLogReg(NumpyMLP):
    """Multinomial logistic regression: an MLP with no hidden layer."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(in_features, num_classes, hidden=())
