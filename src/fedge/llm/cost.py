"""What a LoRA client costs a device: FLOPs, memory, and bytes on the wire.

Counted from the model itself by running one packed block through it with forward
hooks on every linear layer (base ``Linear``/``Conv1D`` and the LoRA ``A``/``B``), plus
attention's two ``T x T`` products per layer (Kaplan et al., "Scaling Laws for Neural
Language Models", 2020, Table 1). Training with a frozen base needs the backward pass
with respect to activations through the whole network but weight gradients only for
the adapter, so a step costs about ``2 x forward`` plus the adapter's own share, not
the ``3 x`` of full training (Hu et al., LoRA, ICLR 2022, Sec. 4.2).

Memory on the device is the frozen base once (in its own dtype), the adapter with its
gradient and optimiser moments, and the activations kept for the batch.
:meth:`LoraCost.model_cost` gives the :class:`fedge.devices.cost.ModelCost` that the
device simulation (:class:`~fedge.devices.DevicePolicy`) takes; it counts only the
adapter as parameters, which is what travels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedge.devices.cost import FLOAT_BYTES, ModelCost, linear_flops

if TYPE_CHECKING:
    from fedge.llm.model import Adapter

OPTIMISER_COPIES = {"adamw": 4, "sgd": 2, "sgd-momentum": 3}
"""Float32 copies of each trainable parameter: value, gradient, optimiser moments."""


@dataclass(frozen=True)
class LoraCost:
    """Per-block (one packed sequence) costs of a base model with a LoRA adapter."""

    block_size: int
    forward_flops: int
    adapter_flops: int
    adapter_params: int
    base_params: int
    base_bytes: int
    activations: int

    @property
    def adapter_bytes(self) -> int:
        return self.adapter_params * FLOAT_BYTES

    def train_flops(self, blocks: int) -> float:
        """Forward, backward through activations, and the adapter's weight gradients."""
        return float(blocks * (2 * self.forward_flops + self.adapter_flops))

    def memory_bytes(
        self, batch_size: int, *, optimizer: str = "adamw", gradient_checkpointing: bool = False, num_layers: int = 1
    ) -> int:
        """Frozen base + adapter copies + activations of a batch (one layer's with checkpointing)."""
        acts = self.activations // max(1, num_layers) if gradient_checkpointing else self.activations
        return self.base_bytes + OPTIMISER_COPIES[optimizer] * self.adapter_bytes + batch_size * acts * FLOAT_BYTES

    def model_cost(self, batch_size: int = 8, *, optimizer: str = "adamw") -> ModelCost:
        """For fedge's device simulation: only the adapter counts as parameters (it travels).

        That cost model charges ``3 x forward`` FLOPs per sample (full training), so the
        forward FLOPs are scaled to charge a LoRA step; and its memory is ``copies x
        params + batch x activations``, so the frozen base and the optimiser's extra
        moments are folded into the per-sample activation term, making its
        ``memory_bytes(batch_size, momentum=False)`` at least :meth:`memory_bytes`
        (within ``4 x batch_size`` bytes).
        """
        extra = self.memory_bytes(batch_size, optimizer=optimizer) - 2 * self.adapter_bytes
        per_sample = -(-extra // (batch_size * FLOAT_BYTES))
        return ModelCost(
            forward_flops=round(self.train_flops(1) / 3), num_params=self.adapter_params, activations=int(per_sample)
        )


def count_lora(adapter: Adapter, block_size: int) -> LoraCost:
    """Count the costs of ``adapter``'s model on one block of ``block_size`` tokens."""
    import torch
    from transformers.pytorch_utils import Conv1D

    model = adapter.model
    flops = adapter_flops = acts = 0

    def hook(mod: Any, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal flops, adapter_flops, acts
        rows = int(inputs[0].numel() // inputs[0].shape[-1])
        if isinstance(mod, Conv1D):
            f = linear_flops(int(mod.weight.shape[0]), int(mod.weight.shape[1]), True, rows)
        else:
            f = linear_flops(mod.in_features, mod.out_features, mod.bias is not None, rows)
        flops += f
        if mod.weight.requires_grad:
            adapter_flops += f
        acts += int(output.numel())

    layers = [
        m for m in model.modules() if isinstance(m, torch.nn.Linear | Conv1D) and not any(True for _ in m.children())
    ]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        model.eval()
        with torch.no_grad():
            model(input_ids=torch.zeros((1, block_size), dtype=torch.long))
    finally:
        for h in handles:
            h.remove()
    cfg = model.config
    n_layer = int(getattr(cfg, "n_layer", getattr(cfg, "num_hidden_layers", 0)))
    width = int(getattr(cfg, "n_embd", getattr(cfg, "hidden_size", 0)))
    flops += n_layer * 2 * 2 * block_size * block_size * width
    stats = adapter.base_stats()
    return LoraCost(
        block_size=block_size,
        forward_flops=flops,
        adapter_flops=adapter_flops,
        adapter_params=adapter.num_params,
        base_params=stats["base_params"],
        base_bytes=stats["base_bytes"],
        activations=acts,
    )
