from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fedge.core.types import ClientContext, TrainConfig
from fedge.llm.client import LoraClient, TextData, token_nll
from fedge.llm.corpus import client_documents
from fedge.llm.model import Adapter, LoraSpec, attach_lora, load_base
from fedge.llm.text import tokenise_and_pack


def test_training_moves_only_the_adapter_and_lowers_local_loss(tiny_base: Path) -> None:
    model, tok = load_base(tiny_base)
    adapter = Adapter(attach_lora(model, LoraSpec(rank=4)))
    blocks = tokenise_and_pack(client_documents(0, 30), lambda t: tok(t)["input_ids"], 32, tok.eos_token_id)
    client = LoraClient(0, adapter, TextData(blocks[:-4], blocks[-4:]))
    frozen = {n: p.detach().clone() for n, p in adapter.model.named_parameters() if not p.requires_grad}
    start = adapter.get()
    before = client.loss(start)
    ctx = ClientContext(client_id=0, round_num=1, rng=np.random.default_rng(0))
    result = client.train(start, TrainConfig(epochs=2, batch_size=8, lr=0.05), ctx)
    assert result.steps == 2 * math.ceil(len(blocks[:-4]) / 8) and result.num_examples == len(blocks) - 4
    assert client.loss(result.params) < before - 0.1
    assert any(not np.array_equal(a, b) for a, b in zip(start, result.params, strict=True))
    for n, p in adapter.model.named_parameters():
        if not p.requires_grad:
            assert (p == frozen[n]).all(), n
    ev = client.evaluate(result.params)
    assert ev.metrics["perplexity"] == math.exp(ev.loss) and ev.num_examples == 4 * 31
    assert (ev.loss, ev.accuracy, ev.num_examples) == token_nll(adapter.model, blocks[-4:])
