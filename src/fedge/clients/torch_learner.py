"""Adapter for any PyTorch ``nn.Module`` classifier.

One module instance is reused for every client: parameters are loaded in, trained with
``torch.optim.SGD`` (FedProx's proximal term and SCAFFOLD's correction are added to the
gradients before each step), and read back out. Parameters are the module's
``parameters()`` in order; buffers are not federated. The built-in ``logreg`` and ``mlp``
declare a :class:`~fedge.clients.kernel.DenseKernel` that runs the same steps in NumPy at a
fraction of the per-step overhead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedge.clients.base import TrainResult, anchor_weights, batches, step_budget
from fedge.clients.kernel import DenseKernel
from fedge.core.errors import ModelError
from fedge.core.params import Params, as_params
from fedge.core.types import TrainConfig


class Scaler(nn.Module):
    """Multiplies its input by a constant: HeteroFL's scaler (``1 / width`` in a sub-model)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def get_params(module: nn.Module) -> Params:
    return [p.detach().cpu().numpy().astype(np.float32, copy=True) for p in module.parameters()]


def set_params(module: nn.Module, params: Params) -> None:
    with torch.no_grad():
        plist = list(module.parameters())
        if len(plist) != len(params):
            raise ModelError(f"model has {len(plist)} parameter tensors, got {len(params)}")
        for p, v in zip(plist, params, strict=True):
            if tuple(p.shape) != tuple(v.shape):
                raise ModelError(f"parameter shape {tuple(v.shape)} does not fit {tuple(p.shape)}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(v)))


class TorchLearner:
    """Train and evaluate an ``nn.Module`` classifier with cross-entropy, or the ``loss`` entry point.

    ``loss`` is ``"package.module:function"`` naming a ``(logits, targets) -> scalar tensor``
    callable used for the training and the evaluation loss (accuracy stays the argmax's);
    it is imported by name on first use, so the learner stays picklable.
    """

    def __init__(
        self,
        module_fn: Callable[[], nn.Module] | nn.Module,
        *,
        loss: str = "",
        kernel: DenseKernel | None = None,
    ) -> None:
        self.module_fn = module_fn if callable(module_fn) and not isinstance(module_fn, nn.Module) else None
        self._module: nn.Module | None = module_fn if isinstance(module_fn, nn.Module) else None
        self.loss = loss
        self._loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        if kernel is not None and loss:
            raise ModelError("a dense kernel trains with cross-entropy; it cannot run training.loss")
        self.kernel = kernel
        """Declared by the builder of a built-in dense model (:mod:`fedge.clients.kernel`): when set,
        training and evaluation run there, on the same batches and to the same result as the module."""

    def __getstate__(self) -> dict[str, object]:
        return {
            "module_fn": self.module_fn,
            "_module": self._module,
            "loss": self.loss,
            "_loss_fn": None,
            "kernel": self.kernel,
        }

    @property
    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The training and evaluation loss: cross-entropy unless ``loss`` names another."""
        if not self.loss:
            return nn.functional.cross_entropy
        if self._loss_fn is None:
            from fedge.usercode import resolve

            self._loss_fn = resolve(self.loss, key="training.loss")
        return self._loss_fn

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = self.loss_fn(out, y)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ModelError(f"training.loss: {self.loss} must return a scalar tensor, got {type(value).__name__}")
        return value

    @property
    def module(self) -> nn.Module:
        if self._module is None:
            assert self.module_fn is not None
            self._module = self.module_fn()
        return self._module

    def init_params(self, seed: int) -> Params:
        if self.module_fn is not None:
            torch.manual_seed(seed)
            return get_params(self.module_fn())
        return get_params(self.module)

    def train(
        self,
        params: Params,
        x: npt.NDArray[np.generic],
        y: npt.NDArray[np.int64],
        cfg: TrainConfig,
        rng: np.random.Generator,
    ) -> TrainResult:
        if self.kernel is not None:
            return self.kernel.train(params, x, y, cfg, rng)
        module = self.module
        set_params(module, params)
        module.train()
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
        yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
        every = list(module.parameters())
        frozen = set(cfg.frozen or ())
        keep = [i for i in range(len(every)) if i not in frozen]
        plist = [every[i] for i in keep]
        for i in frozen:
            every[i].requires_grad_(False)
        opt = torch.optim.SGD(plist, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        anchor = [torch.from_numpy(np.ascontiguousarray(params[i])) for i in keep] if cfg.prox_mu else None
        corr = (
            [torch.from_numpy(np.ascontiguousarray(cfg.grad_correction[i])) for i in keep]
            if cfg.grad_correction is not None
            else None
        )
        pull = [torch.from_numpy(np.ascontiguousarray(cfg.anchor[i])) for i in keep] if cfg.anchor is not None else None
        keep_w, pull_w = anchor_weights(cfg.lr, cfg.anchor_lambda)
        n = len(yt)
        epochs, max_steps = step_budget(cfg, n)
        steps, loss_sum, seen = 0, 0.0, 0
        loss_fn = self._loss
        for _ in range(epochs):
            if steps >= max_steps:
                break
            for idx in batches(n, cfg.batch_size, rng):
                if steps >= max_steps:
                    break
                ib = torch.from_numpy(idx)
                opt.zero_grad(set_to_none=False)
                out = module(xt[ib])
                loss = loss_fn(out, yt[ib])
                loss.backward()  # type: ignore[no-untyped-call]
                with torch.no_grad():
                    if anchor is not None:
                        for p, a in zip(plist, anchor, strict=True):
                            assert p.grad is not None
                            p.grad.add_(p - a, alpha=cfg.prox_mu)
                    if corr is not None:
                        for p, c in zip(plist, corr, strict=True):
                            assert p.grad is not None
                            p.grad.add_(c)
                opt.step()
                if pull is not None:
                    with torch.no_grad():
                        for p, a in zip(plist, pull, strict=True):
                            p.mul_(keep_w).add_(a, alpha=pull_w)
                steps += 1
                loss_sum += loss.item() * len(idx)
                seen += len(idx)
        for i in frozen:
            every[i].requires_grad_(True)
        return TrainResult(
            params=as_params(get_params(module)), steps=steps, loss=loss_sum / max(seen, 1), num_examples=n
        )

    def evaluate(self, params: Params, x: npt.NDArray[np.generic], y: npt.NDArray[np.int64]) -> tuple[float, float]:
        if self.kernel is not None:
            return self.kernel.evaluate(params, x, y)
        module = self.module
        set_params(module, params)
        module.eval()
        with torch.no_grad():
            out = module(torch.as_tensor(np.asarray(x, dtype=np.float32)))
            yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
            if out.shape[-1] <= int(yt.max()):
                raise ModelError(f"model outputs {out.shape[-1]} classes but the labels go up to {int(yt.max())}")
            loss = float(self._loss(out, yt))
            acc = float((out.argmax(dim=-1) == yt).float().mean())
        return loss, acc
