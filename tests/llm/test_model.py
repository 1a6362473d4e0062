from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.core.errors import ConfigError, ModelError
from fedge.llm.model import Adapter, LoraSpec, attach_lora, build_tiny_base, layer_names, load_base


def test_saved_checkpoint_loads_back_through_the_real_checkpoint_path(tmp_path: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = build_tiny_base(tmp_path / "ckpt", n_layer=1, n_embd=16, n_head=2, n_positions=32, seed=3)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    model, tok = load_base(folder)
    assert isinstance(model, GPT2LMHeadModel)
    ids = torch.tensor([tok("hello edge")["input_ids"]])
    assert tok.decode(ids[0]) == "hello edge"
    torch.manual_seed(3)
    original = GPT2LMHeadModel(GPT2Config.from_pretrained(folder))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, original(ids).logits)
    # a model saved with the library's own save_pretrained, as a download would be
    model.save_pretrained(tmp_path / "resaved")
    tok.save_pretrained(tmp_path / "resaved")
    again, _ = load_base(str(tmp_path / "resaved"), dtype="bfloat16")
    assert next(again.parameters()).dtype == torch.bfloat16


def test_missing_base_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist") as err:
        load_base(tmp_path / "no-such-model")
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"no config\.json"):
        load_base(tmp_path / "empty")
    with pytest.raises(ModelError, match="neither a local folder nor in the local Hugging Face cache"):
        load_base("fedge-test/not-a-cached-model")


@pytest.mark.parametrize("rank", [0, -3])
def test_rank_must_be_positive(rank: int) -> None:
    with pytest.raises(ConfigError, match="rank must be a positive integer"):
        LoraSpec(rank=rank)


def test_target_that_matches_nothing_lists_the_layers(tiny_base: Path) -> None:
    model, _ = load_base(tiny_base)
    with pytest.raises(ModelError, match=r"'q_proj' matches no layer; the model's layers: .*h\.0\.attn\.c_attn"):
        attach_lora(model, LoraSpec(target_modules=("q_proj",)))


def test_adapter_is_only_the_lora_tensors_in_a_fixed_order(tiny_base: Path) -> None:
    model, _ = load_base(tiny_base)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapter = Adapter(attach_lora(model, LoraSpec(rank=4, target_modules=("c_attn", "c_fc"))))
    assert [n.split(".lora_")[1][0] for n in adapter.names] == ["A", "B"] * 4
    assert adapter.spec.shapes == ((4, 32), (96, 4), (4, 32), (128, 4)) * 2
    assert adapter.nbytes == 4 * sum(int(np.prod(s)) for s in adapter.spec.shapes)
    stats = adapter.base_stats()
    assert stats["base_params"] == sum(p.numel() for p in base_before.values())
    params = [np.full(s, i, np.float32) for i, s in enumerate(adapter.spec.shapes)]
    adapter.set(params)
    assert all(np.array_equal(a, b) for a, b in zip(adapter.get(), params, strict=True))
    frozen = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in adapter.model.named_parameters()
        if not p.requires_grad
    }
    assert set(frozen) == set(base_before)
    assert "c_attn" in " ".join(layer_names(model)) and "lm_head" in layer_names(model)


@pytest.fixture(scope="module")
def wide_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_base(tmp_path_factory.mktemp("wide") / "base", n_layer=1, n_embd=64, n_head=2, n_positions=32)


def test_int8_base_trains_a_float32_adapter(wide_base: Path) -> None:
    import torch

    plain, _ = load_base(wide_base)
    model, _ = load_base(wide_base, quantization="int8")
    assert model.get_memory_footprint() < plain.get_memory_footprint()
    adapter = Adapter(attach_lora(model, LoraSpec(rank=2, target_modules=("c_attn", "c_fc"))))
    assert adapter.spec.shapes == ((2, 64), (192, 2), (2, 64), (256, 2))
    assert all(t.dtype == torch.float32 for t in adapter.tensors)
    ids = torch.randint(0, 257, (4, 16), generator=torch.Generator().manual_seed(0))
    adapter.model.train()
    adapter.model(input_ids=ids, labels=ids).loss.backward()
    assert all(t.grad is not None for t in adapter.tensors)
    assert all(p.grad is None for p in adapter.model.parameters() if not p.requires_grad)


def test_unknown_quantization_is_refused(tiny_base: Path) -> None:
    with pytest.raises(ConfigError, match="'nf4' is not one of none, int8"):
        load_base(tiny_base, quantization="nf4")


@pytest.mark.integration
def test_a_model_in_the_hugging_face_cache_loads_by_its_id(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    repo = tmp_path / "hub" / "models--fedge-test--tiny-gpt2"
    build_tiny_base(repo / "snapshots" / ("a" * 40), n_layer=1, n_embd=16, n_head=2, n_positions=32)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    code = (
        "from fedge.llm.model import load_base; m, t = load_base('fedge-test/tiny-gpt2'); "
        "print(type(m).__name__, m.config.n_embd, t.eos_token)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["GPT2LMHeadModel", "16", "<|endoftext|>"]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_checkpointing_recomputes_blocks_in_backward(tiny_base: Path, checkpointing: bool) -> None:
    import torch

    model, _ = load_base(tiny_base)
    adapter = Adapter(attach_lora(model, LoraSpec(rank=2), gradient_checkpointing=checkpointing))
    calls: list[int] = []
    model.transformer.h[0].attn.register_forward_hook(lambda *_: calls.append(1))
    adapter.model.train()
    ids = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(0))
    adapter.model(input_ids=ids, labels=ids).loss.backward()
    assert len(calls) == (2 if checkpointing else 1)
    assert all(t.grad is not None and bool(t.grad.abs().sum() > 0) for t in adapter.tensors[1::2])
