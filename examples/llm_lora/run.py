"""Federated LoRA fine-tuning on a laptop CPU, through fedge's Python API.

Writes a synthetic corpus (one JSON-lines file per client, each client a different
writer), fine-tunes a tiny random GPT-2's LoRA adapter over the clients with FedAvg of
the factors and with FlexLoRA's product-space averaging, prints every client's
held-out perplexity before and after, and samples from the result.

    python examples/llm_lora/run.py            # about a minute or two
    python examples/llm_lora/run.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fedge.core.types import TrainConfig
from fedge.llm.config import LlmConfig
from fedge.llm.corpus import write_corpus
from fedge.llm.run import federate, generate, perplexities, prepare, save_adapter
from fedge.llm.strategies import FlexLoRA, LoraFedAvg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    ap.add_argument("--out", default="runs/llm-lora-example", help="where the adapter is saved")
    args = ap.parse_args()
    clients, docs, rounds = (3, 20, 2) if args.quick else (8, 80, 10)
    work = Path(tempfile.mkdtemp(prefix="fedge-llm-"))
    write_corpus(work / "texts", num_clients=clients, docs_per_client=docs, seed=0)
    cfg = LlmConfig(data=str(work / "texts"), tiny_embd=64, tiny_heads=4, rank=8, block_size=64, torch_threads=1)
    out = Path(args.out)
    setup = prepare(cfg, seed=0, workdir=out)
    initial = setup.adapter.get()
    base = perplexities(setup, initial)
    print(
        f"{clients} clients; adapter {setup.adapter.nbytes} bytes per client per round, "
        f"frozen base {setup.adapter.base_stats()['base_bytes']} bytes (never sent)"
    )
    results = {}
    for strategy in (LoraFedAvg(), FlexLoRA()):
        result = federate(
            setup,
            strategy,
            rounds=rounds,
            clients_per_round=max(2, clients // 2),
            train=TrainConfig(epochs=1, batch_size=8, lr=0.03),
            seed=0,
            initial=initial,
        )
        results[strategy.name] = (result, perplexities(setup, result.state.params))
    print(f"{'client':>8} {'base':>8} " + " ".join(f"{n:>12}" for n in results))
    for cid in base["clients"]:
        row = " ".join(f"{ppl['clients'][cid]:12.2f}" for _, ppl in results.values())
        print(f"{cid:>8} {base['clients'][cid]:8.2f} {row}")
    row = " ".join(f"{ppl['global']:12.2f}" for _, ppl in results.values())
    print(f"{'global':>8} {base['global']:8.2f} {row}")
    save_adapter(setup, results["flexlora"][0].state.params, out, base="base")
    for prompt in ("turn", "REPLACED", "so, whisk"):
        print(repr(generate(out, prompt, max_new_tokens=30, temperature=0.7)))


if __name__ == "__main__":
    main()
