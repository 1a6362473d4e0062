from __future__ import annotations

from pathlib import Path

import pytest

from fedge.devices.cost import FLOAT_BYTES, client_cost, linear_flops
from fedge.devices.profiles import builtin_catalog
from fedge.llm.cost import count_lora
from fedge.llm.model import Adapter, LoraSpec, attach_lora, load_base


def test_counts_by_hand_for_a_tiny_gpt2(tiny_base: Path) -> None:
    model, _ = load_base(tiny_base, dtype="bfloat16")
    adapter = Adapter(attach_lora(model, LoraSpec(rank=2, target_modules=("c_attn",))))
    t, d, layers, vocab = 16, 32, 2, 257
    cost = count_lora(adapter, t)
    per_layer_base = (
        linear_flops(d, 3 * d, True, t)
        + linear_flops(d, d, True, t)
        + linear_flops(d, 4 * d, True, t)
        + linear_flops(4 * d, d, True, t)
    )
    lora = linear_flops(d, 2, False, t) + linear_flops(2, 3 * d, False, t)
    head = linear_flops(d, vocab, False, t)
    attention = 2 * 2 * t * t * d
    assert cost.adapter_flops == layers * lora
    assert cost.forward_flops == layers * (per_layer_base + lora + attention) + head
    assert cost.adapter_params == layers * (2 * d + 3 * d * 2) == adapter.num_params
    assert cost.base_bytes == 2 * cost.base_params  # bfloat16 base, counted in its own dtype
    assert cost.train_flops(3) == 3 * (2 * cost.forward_flops + cost.adapter_flops)
    adam = cost.memory_bytes(4)
    assert adam == cost.base_bytes + 4 * cost.adapter_bytes + 4 * cost.activations * FLOAT_BYTES
    assert cost.memory_bytes(4, optimizer="sgd") == adam - 2 * cost.adapter_bytes
    assert cost.memory_bytes(4, gradient_checkpointing=True, num_layers=2) < adam


def test_device_cost_model_charges_adapter_bytes_and_lora_flops(tiny_base: Path) -> None:
    model, _ = load_base(tiny_base)
    cost = count_lora(Adapter(attach_lora(model, LoraSpec(rank=4))), 32)
    mc = cost.model_cost(8)
    assert mc.param_bytes == cost.adapter_bytes
    need = cost.memory_bytes(8)
    assert need <= mc.memory_bytes(8, momentum=False) < need + 4 * 8
    assert need > cost.base_bytes
    assert mc.train_flops(5) == pytest.approx(cost.train_flops(5), rel=1e-6)
    profile = next(iter(builtin_catalog().values()))
    c = client_cost(profile, 1.0, mc, samples=5, steps=1, down_bytes=cost.adapter_bytes, up_bytes=cost.adapter_bytes)
    assert c.compute_s > 0 and c.upload_s > 0
