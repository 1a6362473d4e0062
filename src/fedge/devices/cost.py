"""The cost model: FLOPs and memory counted from the model itself, and one client's round time.

Conventions (the usual ones, e.g. Kaplan et al. 2020 and FedScale, Lai et al. ICML 2022):
a multiply-add is 2 FLOPs; a bias add, an activation or a normalisation step is 1 FLOP
per output element; training costs about 3x the forward pass (forward + backward with
respect to activations and weights). A client's round time is::

    download (params bytes / downlink + latency)
    + compute (samples x 3 x forward FLOPs / (throughput x speed) + steps x step overhead / speed)
    + upload (uplink bytes / uplink + latency)

and its energy is ``power_train x compute + power_comm x (download + upload)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedge.core.errors import ModelError
from fedge.devices.profiles import DeviceProfile

TRAIN_FACTOR = 3.0
"""Training FLOPs per sample as a multiple of the forward pass."""

FLOAT_BYTES = 4


@dataclass(frozen=True)
class ModelCost:
    """Per-sample forward FLOPs, parameter count and per-sample activation elements."""

    forward_flops: int
    num_params: int
    activations: int

    @property
    def param_bytes(self) -> int:
        return self.num_params * FLOAT_BYTES

    def train_flops(self, samples: int) -> float:
        return TRAIN_FACTOR * self.forward_flops * samples

    def memory_bytes(self, batch_size: int, *, momentum: bool) -> int:
        """Parameters + gradients (+ momentum buffer) + activations kept for the batch."""
        copies = 3 if momentum else 2
        return copies * self.param_bytes + batch_size * self.activations * FLOAT_BYTES


def linear_flops(in_features: int, out_features: int, bias: bool, rows: int = 1) -> int:
    """FLOPs of ``y = x W^T + b`` for ``rows`` input rows."""
    return rows * (2 * in_features * out_features + (out_features if bias else 0))


def conv_flops(
    in_channels: int, out_channels: int, kernel: Sequence[int], groups: int, out_positions: int, bias: bool
) -> int:
    """FLOPs of a convolution with ``out_positions`` output positions per channel."""
    per_output = 2 * (in_channels // groups) * math.prod(kernel) + (1 if bias else 0)
    return out_channels * out_positions * per_output


def _leaf_flops(module: Any, out_numel: int, out_shape: Sequence[int], in_shape: Sequence[int]) -> int:
    from torch import nn

    if isinstance(module, nn.Linear):
        rows = math.prod(out_shape[:-1])
        return linear_flops(module.in_features, module.out_features, module.bias is not None, rows)
    if isinstance(module, nn.modules.conv._ConvNd):
        positions = math.prod(out_shape[2:])
        return out_shape[0] * conv_flops(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.groups,
            positions,
            module.bias is not None,
        )
    if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm):
        return 2 * out_numel
    if isinstance(module, nn.modules.pooling._MaxPoolNd | nn.modules.pooling._AvgPoolNd):
        k = module.kernel_size
        area = math.prod(k) if isinstance(k, tuple) else int(k) ** (len(out_shape) - 2)  # type: ignore[arg-type]
        return out_numel * area
    if isinstance(module, nn.modules.pooling._AdaptiveAvgPoolNd | nn.modules.pooling._AdaptiveMaxPoolNd):
        return math.prod(in_shape)
    if isinstance(module, nn.Flatten | nn.Unflatten | nn.Identity | nn.Dropout):
        return 0
    if isinstance(module, nn.Embedding):
        return 0
    if any(True for _ in module.parameters(recurse=False)):
        raise ModelError(
            f"cannot count the FLOPs of layer {type(module).__name__}; "
            "give the device simulation a model of Linear/Conv/Norm layers"
        )
    return out_numel


def count_torch(module: Any, feature_shape: Sequence[int]) -> ModelCost:
    """Count a torch module's per-sample forward FLOPs by running one sample through it with
    forward hooks on every leaf layer (so output sizes, strides and padding are exact)."""
    import torch

    flops = 0
    acts = 0

    def hook(mod: Any, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal flops, acts
        if not isinstance(output, torch.Tensor):
            output = torch.zeros(0)
        in_shape = tuple(inputs[0].shape) if inputs and isinstance(inputs[0], torch.Tensor) else ()
        flops += _leaf_flops(mod, output.numel(), tuple(output.shape), in_shape)
        acts += output.numel()

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros((1, *feature_shape), dtype=torch.float32))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    params = sum(int(p.numel()) for p in module.parameters())
    return ModelCost(forward_flops=flops, num_params=params, activations=acts)


def count_mlp(sizes: Sequence[int]) -> ModelCost:
    """A dense ReLU network ``sizes[0] -> ... -> sizes[-1]`` (the NumPy learners)."""
    flops = acts = params = 0
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        flops += linear_flops(a, b, True)
        params += a * b + b
        acts += b
        if i < len(sizes) - 2:
            flops += b
            acts += b
    return ModelCost(forward_flops=flops, num_params=params, activations=acts)


def count_learner(learner: Any, feature_shape: Sequence[int]) -> ModelCost:
    """Count the model of a fedge learner: a torch module (``.module``) or a NumPy MLP (``.sizes``)."""
    sizes = getattr(learner, "sizes", None)
    if sizes is not None:
        return count_mlp(list(sizes))
    module = getattr(learner, "module", None)
    if module is not None:
        return count_torch(module, feature_shape)
    raise ModelError(
        f"cannot count the FLOPs of a {type(learner).__name__}: "
        "the device simulation needs a torch module or a NumPy MLP learner"
    )


def samples_for_steps(steps: int, n: int, batch_size: int) -> int:
    """Examples processed by ``steps`` mini-batch steps over ``n`` examples (last batch smaller)."""
    if n <= 0 or steps <= 0:
        return 0
    per_epoch = -(-n // batch_size)
    full, rest = divmod(steps, per_epoch)
    return full * n + min(rest * batch_size, n)


@dataclass(frozen=True)
class ClientCost:
    """One client's simulated round: seconds per phase and energy in joules."""

    download_s: float
    compute_s: float
    upload_s: float
    energy_j: float

    @property
    def total_s(self) -> float:
        return self.download_s + self.compute_s + self.upload_s

    @property
    def comm_s(self) -> float:
        return self.download_s + self.upload_s


def transfer_s(nbytes: float, mbps: float, latency_ms: float) -> float:
    return nbytes * 8.0 / (mbps * 1e6) + latency_ms / 1000.0


def client_cost(
    profile: DeviceProfile,
    speed: float,
    model: ModelCost,
    *,
    samples: int,
    steps: int,
    down_bytes: float,
    up_bytes: float,
    precision: str = "fp32",
) -> ClientCost:
    """Round time and energy of one client on ``profile`` (speed multiplier ``speed``)."""
    compute = model.train_flops(samples) / (profile.flops(precision) * speed) + steps * profile.step_overhead_s / speed
    down = transfer_s(down_bytes, profile.downlink_mbps, profile.latency_ms)
    up = transfer_s(up_bytes, profile.uplink_mbps, profile.latency_ms)
    energy = profile.power_train_w * compute + profile.power_comm_w * (down + up)
    return ClientCost(download_s=down, compute_s=compute, upload_s=up, energy_j=energy)
