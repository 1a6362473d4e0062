"""A NumPy training kernel for small dense classifiers: ``Linear`` layers with ReLU between them.

The built-in ``logreg`` and ``mlp`` models spend most of a local step on framework
overhead, not arithmetic: a step of the digits MLP (64-64-10, batch 10) is about 0.3 MFLOP
(about 6 µs of small matmuls on one core here), yet ``TorchLearner`` takes ~150 µs for it
(autograd graph, optimizer, a dozen small tensor calls) and the old NumPy learner ~45 µs
(a fancy index per batch, a copy per parameter per update, list comprehensions over the
parameters). :class:`DenseKernel` does the same step
with every buffer allocated once per call: one gather per *epoch* (the epoch's permuted
rows and one-hot labels, so a batch is a contiguous slice), matmuls written into
preallocated outputs, the gradients of all layers in one flat array so an SGD update is a
single in-place operation, and the learning rate folded into the output gradient when
plain SGD needs nothing else.

It reproduces ``torch.optim.SGD`` on mean cross-entropy step for step: the same
mini-batches (one ``rng.permutation(n)`` per epoch, as :func:`fedge.clients.base.batches`
draws), weight decay added to the gradient, then the momentum buffer (the first step's
buffer is the gradient), then ``p -= lr * buf``; FedProx's ``mu (w - w_start)`` and
SCAFFOLD's correction added to the gradient before the step; the proximal anchor applied
after it; frozen parameters left untouched. Parameters use ``nn.Linear``'s layout
(``weight`` ``(out, in)``, then ``bias``), so the kernel trains the parameters of a torch
``Flatten, Linear, ReLU, ..., Linear`` module and gives the same result to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedge.clients.base import TrainResult, anchor_weights, step_budget
from fedge.core.errors import ModelError
from fedge.core.params import Params
from fedge.core.types import TrainConfig

F32 = npt.NDArray[np.float32]
EVAL_ROWS = 4096
"""Rows evaluated per forward pass, so evaluating a large set does not allocate its activations at once."""


class DenseKernel:
    """SGD and evaluation of ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` with ReLU between layers.

    ``scale`` multiplies every hidden activation (HeteroFL's scaler, ``1 / width``).
    """

    def __init__(self, sizes: Sequence[int], scale: float = 1.0) -> None:
        if len(sizes) < 2 or min(sizes) <= 0:
            raise ModelError(f"bad dense model sizes {list(sizes)}")
        self.sizes = [int(s) for s in sizes]
        self.scale = np.float32(scale)
        self.shapes: list[tuple[int, ...]] = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            self.shapes += [(fan_out, fan_in), (fan_out,)]

    @property
    def num_classes(self) -> int:
        return self.sizes[-1]

    def _flat(self, params: Params) -> F32:
        if len(params) != len(self.shapes):
            raise ModelError(f"model has {len(self.shapes)} parameter tensors, got {len(params)}")
        for p, shape in zip(params, self.shapes, strict=True):
            if tuple(p.shape) != shape:
                raise ModelError(f"parameter shape {tuple(p.shape)} does not fit {shape}")
        return np.concatenate([np.asarray(p, dtype=np.float32).ravel() for p in params])

    def _views(self, flat: F32) -> list[F32]:
        out, at = [], 0
        for shape in self.shapes:
            size = int(np.prod(shape))
            out.append(flat[at : at + size].reshape(shape))
            at += size
        return out

    def _rows(self, x: npt.NDArray[np.generic]) -> F32:
        """``x`` as float32 rows of ``sizes[0]`` features (a torch ``Flatten``)."""
        xf = np.asarray(x, dtype=np.float32)
        if xf.size != len(xf) * self.sizes[0]:
            raise ModelError(f"model takes {self.sizes[0]} input features, got shape {tuple(xf.shape[1:])}")
        return xf.reshape(len(xf), self.sizes[0])

    def _check_labels(self, y: npt.NDArray[np.int64]) -> None:
        if len(y) and (int(np.max(y)) >= self.num_classes or int(np.min(y)) < 0):
            raise ModelError(f"model outputs {self.num_classes} classes but the labels go up to {int(np.max(y))}")

    def train(
        self,
        params: Params,
        x: npt.NDArray[np.generic],
        y: npt.NDArray[np.int64],
        cfg: TrainConfig,
        rng: np.random.Generator,
    ) -> TrainResult:
        """``cfg``'s local SGD from ``params`` on ``(x, y)``; see the module docstring for the step.

        A diverging client (overflow to Inf, then NaN) trains on silently, as torch does; the
        server's validator rejects its update.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return self._train(params, x, y, cfg, rng)

    def _train(
        self,
        params: Params,
        x: npt.NDArray[np.generic],
        y: npt.NDArray[np.int64],
        cfg: TrainConfig,
        rng: np.random.Generator,
    ) -> TrainResult:
        n = len(y)
        start = self._flat(params)
        w = start.copy()
        ws = self._views(w)
        grad = np.empty_like(w)
        gs = self._views(grad)
        xf = self._rows(x)
        yl = np.asarray(y, dtype=np.int64)
        self._check_labels(yl)
        epochs, max_steps = step_budget(cfg, n)
        bs = cfg.batch_size
        rows = min(bs, max(n, 1))
        layers = len(self.sizes) - 1
        acts = [np.empty((rows, s), np.float32) for s in self.sizes[1:]]
        back = [np.empty((rows, s), np.float32) for s in self.sizes[1:-1]]
        eye = np.eye(self.num_classes, dtype=np.float32)
        frozen = sorted(set(cfg.frozen or ()))
        mask = None
        if frozen:
            mask = np.zeros(len(w), dtype=bool)
            ends = np.cumsum([int(np.prod(shape)) for shape in self.shapes])
            for i in frozen:
                mask[ends[i] - int(np.prod(self.shapes[i])) : ends[i]] = True
        corr = self._flat(cfg.grad_correction) if cfg.grad_correction is not None else None
        pull = self._flat(cfg.anchor) if cfg.anchor is not None else None
        keep_w, pull_w = (np.float32(v) for v in anchor_weights(cfg.lr, cfg.anchor_lambda))
        mu, wd, mom = np.float32(cfg.prox_mu), np.float32(cfg.weight_decay), np.float32(cfg.momentum)
        lr = np.float32(cfg.lr)
        plain = not (cfg.prox_mu or corr is not None or cfg.weight_decay or cfg.momentum or mask is not None)
        buf: F32 | None = None
        tmp = np.empty_like(w) if cfg.prox_mu or cfg.weight_decay else None
        scaled = self.scale != 1
        steps, loss_sum, seen = 0, 0.0, 0
        for _ in range(epochs):
            if steps >= max_steps:
                break
            order = rng.permutation(n)
            xe = xf[order]
            ye = eye[yl[order]]
            for lo in range(0, n, bs):
                if steps >= max_steps:
                    break
                xb = xe[lo : lo + bs]
                yb = ye[lo : lo + bs]
                k = len(xb)
                a = xb
                for i in range(layers):
                    out = acts[i][:k]
                    np.matmul(a, ws[2 * i].T, out=out)
                    out += ws[2 * i + 1]
                    if i < layers - 1:
                        np.maximum(out, 0.0, out=out)
                        if scaled:
                            out *= self.scale
                    a = out
                z = a
                z -= z.max(axis=1, keepdims=True)
                e = np.exp(z)
                s = e.sum(axis=1, keepdims=True)
                loss_sum += float(np.log(s).sum()) - float(np.vdot(z, yb))
                e /= s
                e -= yb
                e *= lr / np.float32(k) if plain else np.float32(1.0) / np.float32(k)
                g = e
                for i in reversed(range(layers)):
                    a_in = xb if i == 0 else acts[i - 1][:k]
                    np.matmul(g.T, a_in, out=gs[2 * i])
                    g.sum(axis=0, out=gs[2 * i + 1])
                    if i > 0:
                        gh = back[i - 1][:k]
                        np.matmul(g, ws[2 * i], out=gh)
                        if scaled:
                            gh *= self.scale
                        gh *= a_in > 0
                        g = gh
                if plain:
                    w -= grad
                else:
                    if tmp is not None and cfg.prox_mu:
                        np.subtract(w, start, out=tmp)
                        tmp *= mu
                        grad += tmp
                    if corr is not None:
                        grad += corr
                    if tmp is not None and cfg.weight_decay:
                        np.multiply(w, wd, out=tmp)
                        grad += tmp
                    if mask is not None:
                        grad[mask] = 0.0
                    step = grad
                    if cfg.momentum:
                        if buf is None:
                            buf = grad.copy()
                        else:
                            buf *= mom
                            buf += grad
                        step = buf
                    w -= lr * step
                if pull is not None:
                    w *= keep_w
                    w += pull_w * pull
                    if mask is not None:
                        w[mask] = start[mask]
                steps += 1
                seen += k
        return TrainResult(params=[v.copy() for v in ws], steps=steps, loss=loss_sum / max(seen, 1), num_examples=n)

    def train_stacked(
        self,
        params: Params,
        x: F32,
        y: npt.NDArray[np.int64],
        idx: npt.NDArray[np.int64],
        mask: F32,
        lr: F32,
        mu: F32 | None = None,
        corr: list[F32] | None = None,
    ) -> tuple[list[F32], npt.NDArray[np.float64]]:
        """Plain local SGD of ``k`` clients in lock-step, every client from the same ``params``.

        ``x`` (k, n, features) and ``y`` (k, n) are each client's rows, padded; ``idx`` (k, T, b)
        the rows of each client's mini-batch at step ``t`` and ``mask`` (k, T, b) 1 for the real
        ones (a client whose schedule is over has an all-zero mask and stays put); ``lr`` and
        ``mu`` (FedProx's ``mu (w - w_start)``) are per client, ``corr`` SCAFFOLD's per-client
        correction, one (k, *shape) array per tensor. Each client's step is the one
        :meth:`train` takes on its own batch: mean cross-entropy over the batch's real rows.
        Returns the clients' parameters, one (k, *shape) array per tensor, and each client's
        summed training loss.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return self._train_stacked(params, x, y, idx, mask, lr, mu, corr)

    def _train_stacked(
        self,
        params: Params,
        x: F32,
        y: npt.NDArray[np.int64],
        idx: npt.NDArray[np.int64],
        mask: F32,
        lr: F32,
        mu: F32 | None,
        corr: list[F32] | None,
    ) -> tuple[list[F32], npt.NDArray[np.float64]]:
        # Weights are kept transposed, (in, out), so that both the forward product and the
        # weight gradient are contiguous batched matmuls. Until a client's first update every
        # client holds the same model: those layers stay one shared (in, out) matrix, and the
        # product of the whole bucket's batch with it is one large GEMM; the first update
        # makes the per-client copies (no np.repeat of the model beforehand).
        k, steps = idx.shape[0], idx.shape[1]
        start = self._views(self._flat(params))
        layers = len(self.sizes) - 1
        base: list[F32] = []
        for i in range(layers):
            base += [np.ascontiguousarray(start[2 * i].T), start[2 * i + 1]]
        ws: list[F32] = list(base)
        shared = [True] * len(ws)
        n = x.shape[1]
        xf = np.asarray(x, dtype=np.float32).reshape(k * n, self.sizes[0])  # client i's row r is row i n + r
        yl = np.asarray(y, dtype=np.int64).reshape(k * n)
        self._check_labels(yl)
        eye = np.eye(self.num_classes, dtype=np.float32)
        offsets = (np.arange(k, dtype=np.int64) * n)[:, None]
        loss = np.zeros(k, np.float64)
        prox = mu is not None and bool(np.any(mu))
        corr_t = None
        if corr is not None:
            corr_t = [c.transpose(0, 2, 1) if j % 2 == 0 else c for j, c in enumerate(corr)]
        for t in range(steps):
            m = mask[:, t]
            count = m.sum(axis=1)
            flat = (idx[:, t] + offsets).ravel()  # one take of whole rows: far cheaper than a 2-D fancy index
            b = idx.shape[2]
            a = np.take(xf, flat, axis=0).reshape(k, b, -1)
            yb = eye[np.take(yl, flat)].reshape(k, b, -1)
            acts = [a]
            for i in range(layers):
                w, bias = ws[2 * i], ws[2 * i + 1]
                z = (a.reshape(k * b, -1) @ w).reshape(k, b, -1) if shared[2 * i] else np.matmul(a, w)
                z += bias if shared[2 * i + 1] else bias[:, None, :]
                if i < layers - 1:
                    np.maximum(z, 0.0, out=z)
                    if self.scale != 1:
                        z *= self.scale
                    acts.append(z)
                a = z
            z = a
            z -= z.max(axis=2, keepdims=True)
            e = np.exp(z)
            s = e.sum(axis=2, keepdims=True)
            loss += ((np.log(s[:, :, 0]) - (z * yb).sum(axis=2)) * m).sum(axis=1)
            e /= s
            e -= yb
            e *= (m / np.maximum(count, 1.0)[:, None])[:, :, None]
            g = e
            grads: list[F32] = [np.empty(0, np.float32)] * len(ws)
            for i in reversed(range(layers)):
                a_in = acts[i]
                grads[2 * i] = np.matmul(a_in.transpose(0, 2, 1), g)  # (k, in, out)
                grads[2 * i + 1] = g.sum(axis=1)
                if i > 0:
                    w = ws[2 * i]
                    if shared[2 * i]:
                        gh = (g.reshape(k * b, -1) @ w.T).reshape(k, b, -1)
                    else:
                        gh = np.matmul(g, w.transpose(0, 2, 1))
                    if self.scale != 1:
                        gh *= self.scale
                    gh *= a_in > 0
                    g = gh
            step = (lr * (count > 0)).astype(np.float32)
            for j, gr in enumerate(grads):
                w = ws[j]
                if prox:
                    assert mu is not None
                    gr += mu.reshape((k,) + (1,) * (gr.ndim - 1)) * (w - base[j])
                if corr_t is not None:
                    gr += corr_t[j]
                gr *= step.reshape((k,) + (1,) * (gr.ndim - 1))
                if shared[j]:
                    ws[j] = w[None] - gr  # the clients' own copies, made by their first update
                    shared[j] = False
                else:
                    w -= gr
        out: list[F32] = []
        for j, w in enumerate(ws):
            if shared[j]:
                w = np.repeat(w[None], k, axis=0)
            out.append(w.transpose(0, 2, 1) if j % 2 == 0 else w)  # (k, out, in) views of the (in, out) arrays
        return out, loss

    def logits(self, params: Params, x: npt.NDArray[np.generic]) -> F32:
        """The model's outputs on ``x`` (one row per example)."""
        ws = self._views(self._flat(params))
        h = self._rows(x)
        layers = len(self.sizes) - 1
        for i in range(layers):
            h = h @ ws[2 * i].T + ws[2 * i + 1]
            if i < layers - 1:
                h = np.maximum(h, 0.0)
                if self.scale != 1:
                    h = h * self.scale
        return h

    def evaluate(self, params: Params, x: npt.NDArray[np.generic], y: npt.NDArray[np.int64]) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of ``params`` on ``(x, y)`` (NaN for a diverged model, silently)."""
        yl = np.asarray(y, dtype=np.int64)
        self._check_labels(yl)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return self._evaluate(params, x, yl)

    def _evaluate(self, params: Params, x: npt.NDArray[np.generic], yl: npt.NDArray[np.int64]) -> tuple[float, float]:
        loss_sum, hits = 0.0, 0
        for lo in range(0, len(yl), EVAL_ROWS):
            z = self.logits(params, x[lo : lo + EVAL_ROWS]).astype(np.float64)
            yb = yl[lo : lo + EVAL_ROWS]
            hits += int(np.sum(z.argmax(axis=1) == yb))
            z -= z.max(axis=1, keepdims=True)
            loss_sum += float(np.sum(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(yb)), yb]))
        n = max(len(yl), 1)
        return loss_sum / n, hits / n
