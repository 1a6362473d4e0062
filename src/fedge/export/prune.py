"""Structured pruning: remove whole neurons and channels, so the model really shrinks.

A unit (a Linear layer's output neuron, a Conv2d's output channel) is ranked by the L1
or L2 norm of its incoming weights, and the lowest-ranked ``ratio`` of every hidden
layer is removed together with the matching inputs of the next weighted layer (Li et
al., "Pruning Filters for Efficient ConvNets", ICLR 2017). The output layer is never
pruned. Unlike unstructured (masking) pruning, the result is a smaller dense model:
fewer parameters, fewer FLOPs, a smaller ONNX file.

Works on ``nn.Sequential`` models of Linear / Conv2d layers separated by shape-preserving
layers (ReLU, pooling, Flatten, Unflatten, Dropout) — every built-in fedge model.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedge.core.errors import ModelError

NORMS = ("l1", "l2")
_PASSTHROUGH = (
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "GELU",
    "MaxPool2d",
    "AvgPool2d",
    "Flatten",
    "Unflatten",
    "Dropout",
    "Identity",
)


@dataclass
class PruneResult:
    """The pruned model and what was removed, per pruned layer index."""

    module: Any
    kept: dict[int, list[int]]
    """Sequential index of each pruned layer -> indices of the units it keeps."""
    before: dict[int, int]
    """Sequential index -> number of units before pruning."""

    def widths(self) -> list[int]:
        """Units each pruned layer keeps, in layer order (an mlp's new ``hidden``)."""
        return [len(self.kept[i]) for i in sorted(self.kept)]


def unit_norms(weight: np.ndarray, norm: str) -> np.ndarray:
    """Norm of each output unit's incoming weights (rows of a Linear, filters of a Conv)."""
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    if norm == "l1":
        out: np.ndarray = np.abs(w).sum(axis=1)
        return out
    if norm == "l2":
        out = np.sqrt((w * w).sum(axis=1))
        return out
    raise ModelError(f"unknown pruning norm {norm!r}; valid: {', '.join(NORMS)}")


def keep_count(units: int, ratio: float, layer: str) -> int:
    """Units kept when ``ratio`` of ``units`` is removed; refuses to empty a layer."""
    if not 0.0 <= ratio < 1.0:
        raise ModelError(f"pruning ratio must be in [0, 1), got {ratio!r}: 1 would remove every layer")
    keep = round(units * (1.0 - ratio))
    if keep < 1:
        raise ModelError(
            f"pruning ratio {ratio} would remove the whole of {layer} (all {units} units); use a smaller ratio"
        )
    return keep


def _weighted(module: Any) -> list[int]:
    from torch import nn

    idx = []
    for i, layer in enumerate(module):
        if isinstance(layer, nn.Linear | nn.Conv2d):
            if isinstance(layer, nn.Conv2d) and layer.groups != 1:
                raise ModelError(f"layer {i} is a grouped convolution; structured pruning does not support it")
            idx.append(i)
        elif type(layer).__name__ not in _PASSTHROUGH:
            raise ModelError(f"layer {i} ({type(layer).__name__}) is not supported by structured pruning")
    return idx


def prune(module: Any, ratio: float, norm: str = "l1") -> PruneResult:
    """Remove the ``ratio`` of lowest-norm units of every hidden layer of ``module``.

    Returns a pruned deep copy; ``module`` is left untouched. A ratio that would leave a
    layer with no unit, or a model with no hidden layer to prune, is a ModelError.
    """
    import torch
    from torch import nn

    if norm not in NORMS:
        raise ModelError(f"unknown pruning norm {norm!r}; valid: {', '.join(NORMS)}")
    if not isinstance(module, nn.Sequential):
        raise ModelError(f"structured pruning needs an nn.Sequential model, got {type(module).__name__}")
    layers = _weighted(module)
    if ratio > 0 and len(layers) < 2:
        raise ModelError("the model has no hidden layer to prune (only its output layer)")
    out = copy.deepcopy(module)
    kept: dict[int, list[int]] = {}
    before: dict[int, int] = {}
    if ratio == 0:
        return PruneResult(out, kept, before)
    for a, b in itertools.pairwise(layers):
        cur: Any = out[a]
        nxt: Any = out[b]
        w = cur.weight.detach().cpu().numpy()
        units = w.shape[0]
        n_keep = keep_count(units, ratio, f"layer {a} ({type(cur).__name__})")
        order = np.argsort(-unit_norms(w, norm), kind="stable")
        keep = np.sort(order[:n_keep])
        kept[a], before[a] = [int(i) for i in keep], units
        ki = torch.as_tensor(keep, dtype=torch.long)
        new_cur: Any
        if isinstance(cur, nn.Linear):
            new_cur = nn.Linear(cur.in_features, n_keep, bias=cur.bias is not None)
        else:
            new_cur = nn.Conv2d(
                cur.in_channels,
                n_keep,
                cur.kernel_size,
                stride=cur.stride,
                padding=cur.padding,
                dilation=cur.dilation,
                bias=cur.bias is not None,
                padding_mode=cur.padding_mode,
            )
        with torch.no_grad():
            new_cur.weight.copy_(cur.weight[ki])
            if cur.bias is not None:
                new_cur.bias.copy_(cur.bias[ki])
        in_idx = ki
        if isinstance(nxt, nn.Linear) and isinstance(cur, nn.Conv2d):
            per = nxt.in_features // units
            if per * units != nxt.in_features:
                raise ModelError(
                    f"layer {b} inputs ({nxt.in_features}) are not a whole number per channel of layer {a} ({units})"
                )
            in_idx = (ki[:, None] * per + torch.arange(per)[None, :]).reshape(-1)
        new_nxt: Any
        if isinstance(nxt, nn.Linear):
            new_nxt = nn.Linear(len(in_idx), nxt.out_features, bias=nxt.bias is not None)
        else:
            if isinstance(cur, nn.Linear):
                raise ModelError(f"layer {b} is a convolution after a Linear layer; cannot prune layer {a}")
            new_nxt = nn.Conv2d(
                len(in_idx),
                nxt.out_channels,
                nxt.kernel_size,
                stride=nxt.stride,
                padding=nxt.padding,
                dilation=nxt.dilation,
                bias=nxt.bias is not None,
                padding_mode=nxt.padding_mode,
            )
        with torch.no_grad():
            new_nxt.weight.copy_(nxt.weight[:, in_idx])
            if nxt.bias is not None:
                new_nxt.bias.copy_(nxt.bias)
        out[a], out[b] = new_cur, new_nxt
    return PruneResult(out, kept, before)


def count_params(module: Any) -> int:
    return sum(int(p.numel()) for p in module.parameters())
