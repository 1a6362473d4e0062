"""Federated LoRA fine-tuning end to end: build, run, write the run folder, generate.

The run folder holds ``config.toml``, ``metrics.jsonl``/``.csv``, ``summary.json``
(per-client and global held-out perplexity of the base model and of the final
adapter), ``adapter/`` (the aggregated adapter in ``peft``'s own format),
``fedge_llm.json`` (which base model it belongs to) and, when fedge built the tiny
random base, ``base/``. It is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedge.core.errors import ConfigError, DataError, ModelError
from fedge.core.files import output_folder
from fedge.core.params import Params
from fedge.core.types import TrainConfig
from fedge.engine import Callback, EvalPlan, RoundPolicy, RunResult
from fedge.federation import BuildContext, Federation, make_strategy, train_config
from fedge.llm.client import LoraClient, TextData, token_nll
from fedge.llm.config import LlmConfig
from fedge.llm.corpus import corpus_documents
from fedge.llm.model import Adapter, LoraSpec, attach_lora, build_tiny_base, load_base
from fedge.llm.strategies import FlexLoRA, LoraFedAvg
from fedge.llm.text import client_files, read_documents, split_documents, tokenise_and_pack
from fedge.pipeline import Transform
from fedge.simulation.sampling import Sampling
from fedge.strategies.base import Strategy

RUN_INFO = "fedge_llm.json"
SHARED_MODEL_BACKENDS = ("sequential", "debug")
"""Backends that run clients one at a time in this process, as the shared base needs."""


@dataclass
class LoraSetup:
    """A loaded base with its adapter, the tokenizer, and every client's packed text."""

    adapter: Adapter
    tokenizer: Any
    data: list[TextData]
    base: str
    base_dtype: str
    optimizer: str = "adamw"
    quantization: str = "none"

    @property
    def num_clients(self) -> int:
        return len(self.data)

    def client(self, cid: int) -> LoraClient:
        return LoraClient(cid, self.adapter, self.data[cid], optimizer=self.optimizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])


def client_texts(cfg: LlmConfig, seed: int) -> list[list[str]]:
    """Every client's documents: from ``cfg.data`` files, or the synthetic ``cfg.corpus``."""
    if cfg.data:
        return [read_documents(p, cfg.text_field) for p in client_files(cfg.data)]
    return [corpus_documents(cfg.corpus, cid, cfg.docs_per_client, seed=seed) for cid in range(cfg.num_clients)]


def prepare(cfg: LlmConfig, *, seed: int, workdir: str | Path) -> LoraSetup:
    """Load (or build, into ``workdir/base``) the base, attach LoRA, tokenise every client."""
    spec = LoraSpec(rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout, target_modules=tuple(cfg.target_modules))
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    base = cfg.base_model
    if not base:
        base = str(
            build_tiny_base(
                Path(workdir) / "base",
                n_layer=cfg.tiny_layers,
                n_embd=cfg.tiny_embd,
                n_head=cfg.tiny_heads,
                n_positions=max(128, cfg.block_size),
                seed=seed,
            )
        )
    model, tokenizer = load_base(base, dtype=cfg.base_dtype, quantization=cfg.base_quantization)
    max_pos = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if max_pos is not None and cfg.block_size > max_pos:
        raise ModelError(f"llm.block_size: {cfg.block_size} exceeds the model's context of {max_pos} tokens")
    adapter = Adapter(attach_lora(model, spec, gradient_checkpointing=cfg.gradient_checkpointing, seed=seed))
    setup = LoraSetup(adapter, tokenizer, [], base, cfg.base_dtype, cfg.optimizer, cfg.base_quantization)
    eos = int(tokenizer.eos_token_id)
    for cid, docs in enumerate(client_texts(cfg, seed)):
        if len(docs) < 2:
            raise DataError(f"client {cid}: {len(docs)} documents, need at least 2 (train and test)")
        train, test = split_documents(docs, cfg.test_fraction, np.random.default_rng([seed, cid, 0x7E57]))
        what = f"client {cid}"
        test_blocks = (
            tokenise_and_pack(test, setup.encode, cfg.block_size, eos, what=f"{what} held-out text")
            if test
            else np.zeros((0, cfg.block_size), np.int64)
        )
        setup.data.append(TextData(tokenise_and_pack(train, setup.encode, cfg.block_size, eos, what=what), test_blocks))
    return setup


def perplexities(setup: LoraSetup, params: Params) -> dict[str, Any]:
    """Held-out perplexity of each client and over all clients' held-out tokens."""
    setup.adapter.set(params)
    per: dict[str, float] = {}
    total, count = 0.0, 0
    for cid, d in enumerate(setup.data):
        nll, _, n = token_nll(setup.adapter.model, d.test if len(d.test) else d.train)
        per[str(cid)] = math.exp(nll)
        total, count = total + nll * n, count + n
    return {"global": math.exp(total / count), "clients": per}


def personalised(setup: LoraSetup, params: Params, train: TrainConfig, *, seed: int = 0) -> dict[str, Any]:
    """Each client fine-tunes ``params`` locally with ``train``; held-out perplexity of each result.

    The measure of how much a client's own style still has to teach a shared adapter
    (personalisation by local fine-tuning, as in Wang et al., "Federated Evaluation of
    On-device Personalization", 2019).
    """
    from fedge.core.types import ClientContext, client_rng

    per: dict[str, float] = {}
    total, count = 0.0, 0
    for cid, d in enumerate(setup.data):
        ctx = ClientContext(client_id=cid, round_num=0, rng=client_rng(seed, 0, cid, stream=1))
        local = setup.client(cid).train(params, train, ctx).params
        setup.adapter.set(local)
        nll, _, n = token_nll(setup.adapter.model, d.test if len(d.test) else d.train)
        per[str(cid)] = math.exp(nll)
        total, count = total + nll * n, count + n
    setup.adapter.set(params)
    return {"global": math.exp(total / count), "clients": per}


def lora_federation(
    setup: LoraSetup,
    strategy: Strategy,
    *,
    rounds: int,
    clients_per_round: int,
    train: TrainConfig,
    seed: int = 0,
    transforms: Sequence[Transform] = (),
    callbacks: Sequence[Callback] = (),
    backend: str = "sequential",
    eval_every: int = 1,
    federated_eval: bool = False,
    initial: Params | None = None,
    policy: RoundPolicy | None = None,
    exp: Any = None,
) -> Federation:
    """The federation of ``setup``'s writers: only the adapter travels.

    ``initial`` is the starting adapter (default: the one now loaded in the model); ``exp``,
    when given, adds the callbacks and round policy of its sections (privacy budget,
    dashboard, tracking).

    The central evaluation is the held-out next-token loss over all clients' test text
    (``test_loss`` is its mean NLL, ``test_accuracy`` next-token accuracy). Transforms
    that act on summed updates (secure aggregation, central DP noise) hide single
    updates from the server: ``flexlora`` then refuses to run, and ``lora-fedavg``
    stops reporting ``product_gap``.
    """
    if backend == "auto":
        backend = "sequential"  # auto's pick for clients that share one base model in this process
    if backend not in SHARED_MODEL_BACKENDS:
        raise ConfigError(
            f"training.backend: {backend!r} cannot run LoRA clients, which share one base "
            f"model in this process; use auto or one of {', '.join(SHARED_MODEL_BACKENDS)}"
        )
    on_sums = [type(t).__name__ for t in transforms if type(t).aggregate is not Transform.aggregate]
    if on_sums and isinstance(strategy, FlexLoRA):
        raise ConfigError(
            f"strategy flexlora averages B @ A, which is not linear in the update, so it cannot "
            f"run with transforms that act on summed updates ({', '.join(on_sums)}); use lora-fedavg"
        )
    if on_sums and isinstance(strategy, LoraFedAvg):
        strategy.report_gap = False
    held_out = np.concatenate([d.test for d in setup.data if len(d.test)] or [setup.data[0].train])

    def evaluator(params: list[np.ndarray]) -> tuple[float, float]:
        setup.adapter.set(params)
        nll, acc, _ = token_nll(setup.adapter.model, held_out)
        return nll, acc

    return Federation.of(
        strategy=strategy,
        client_fn=setup.client,
        num_clients=setup.num_clients,
        initial=initial if initial is not None else setup.adapter.get(),
        rounds=rounds,
        sampling=lora_sampling(clients_per_round, setup.num_clients),
        train=train,
        transforms=transforms,
        seed=seed,
        backend=backend,
        evaluator=evaluator,
        eval_plan=EvalPlan(every=eval_every, federated_clients=-1 if federated_eval else 0),
        callbacks=list(callbacks),
        policy=policy,
        exp=exp,
    )


def lora_sampling(clients_per_round: int, num_clients: int) -> Sampling:
    """``[llm]`` brings its own writers, so the cohort is ``clients_per_round`` of them (0 = every writer)."""
    return Sampling(count=min(clients_per_round, num_clients) if clients_per_round else num_clients)


def federate(setup: LoraSetup, strategy: Strategy, **kwargs: Any) -> RunResult:
    """Run :func:`lora_federation` in process (same keyword arguments)."""
    return lora_federation(setup, strategy, **kwargs).run()


def device_policy(exp: Any, setup: LoraSetup, train: TrainConfig, block_size: int) -> RoundPolicy | None:
    """The device simulation of an experiment's ``[devices]`` section, costed for LoRA (None when off).

    Devices are charged the LoRA step's FLOPs, the adapter's bytes each way, and the
    frozen base plus adapter and optimiser state in memory (:mod:`fedge.llm.cost`).
    """
    if "devices" not in exp.extensions or not exp.section("devices").enabled:
        return None
    from fedge.devices import device_policy as costed
    from fedge.llm.cost import count_lora

    optimizer = "sgd-momentum" if setup.optimizer == "sgd" and train.momentum > 0 else setup.optimizer
    return costed(
        exp,
        population=setup.num_clients,
        model=count_lora(setup.adapter, block_size).model_cost(train.batch_size, optimizer=optimizer),
        sizes=[len(d.train) for d in setup.data],
        train=train,
    )


def config_transforms(exp: Any, ctx: BuildContext) -> list[Transform]:
    """The pipeline transforms the experiment's sections ask for ([compression], [privacy] ...),
    sized for the writers' federation ``ctx`` (no validation: the parts' own refuse a plain run)."""
    from fedge.plugins import registry

    return registry.transforms(exp, ctx)


def run_experiment(
    exp: Any,
    callbacks: Sequence[Callback] = (),
    output: str | None = None,
    *,
    overwrite: bool = False,
) -> tuple[RunResult, Path, dict[str, Any]]:
    """Run an experiment whose ``[llm]`` section is enabled; returns result, folder, summary.

    The folder follows the rules of :mod:`fedge.core.files`, as for ``fedge run``: ``output``,
    or the config's template with a ``-2``, ``-3`` ... suffix when taken.
    """
    from fedge.experiment import write_record

    cfg: LlmConfig = exp.section("llm")
    t0 = time.perf_counter()
    target = output or exp.output_dir(dataset="llm")
    with output_folder(target, overwrite=overwrite, unique=not output and not overwrite) as folder:
        tmp = folder.tmp
        setup = prepare(cfg, seed=exp.seed, workdir=tmp)
        initial = setup.adapter.get()
        before = perplexities(setup, initial)
        t = exp.training
        train = train_config(exp)
        sampling = lora_sampling(t.clients_per_round, setup.num_clients)
        ctx = BuildContext.of(sampling, setup.num_clients, seed=exp.seed)
        result = federate(
            setup,
            make_strategy(exp),
            rounds=exp.rounds,
            clients_per_round=ctx.cohort,
            train=train,
            seed=exp.seed,
            callbacks=callbacks,
            backend=t.backend,
            transforms=config_transforms(exp, ctx),
            eval_every=exp.evaluation.every,
            policy=device_policy(exp, setup, train, cfg.block_size),
            exp=exp,
        )
        if result.history and all(r.participants == 0 for r in result.history):
            first = next(
                (f"{why} (clients {ids})" for r in result.history for why, ids in r.dropped.items()),
                "no client trained",
            )
            raise ModelError(f"no client update was usable in any round; {first}")
        after = perplexities(setup, result.state.params)
        if cfg.personalise_epochs:
            local = replace(train, epochs=cfg.personalise_epochs)
            extra: dict[str, Any] = {
                "perplexity_personalised": personalised(setup, result.state.params, local, seed=exp.seed)
            }
        else:
            extra = {}
        summary = {
            "rounds": len(result.history),
            "base_model": cfg.base_model or "tiny random GPT-2",
            "adapter_bytes": setup.adapter.nbytes,
            **setup.adapter.base_stats(),
            "uplink_bytes_per_client_round": [r.uplink_bytes / max(1, r.participants) for r in result.history],
            "perplexity_base": before,
            "perplexity_final": after,
            **extra,
            "wall_s": time.perf_counter() - t0,
        }
        write_record(exp, result.history, tmp)
        save_adapter(setup, result.state.params, tmp, base=None if cfg.base_model else "base")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    return result, folder.target, summary


def save_adapter(setup: LoraSetup, params: Params, folder: Path, *, base: str | None = None) -> None:
    """Write ``params`` as a ``peft`` adapter under ``folder/adapter`` and the run info.

    ``base`` is the base model as recorded for :func:`generate` (a path relative to
    the folder, or ``None`` for the base ``setup`` was loaded from).
    """
    setup.adapter.set(params)
    setup.adapter.model.save_pretrained(folder / "adapter")
    info = {
        "base": base or str(Path(setup.base).resolve() if Path(setup.base).exists() else setup.base),
        "relative": base is not None,
        "base_dtype": setup.base_dtype,
        "base_quantization": setup.quantization,
    }
    (folder / RUN_INFO).write_text(json.dumps(info, indent=2))


def load_run(run_dir: str | Path) -> tuple[Any, Any]:
    """``(model, tokenizer)``: the run's base with its aggregated adapter, ready to sample."""
    from fedge.llm.model import quiet_libraries

    quiet_libraries()
    from peft import PeftModel

    d = Path(run_dir)
    info_path = d / RUN_INFO
    if not d.is_dir():
        raise DataError(f"{d}: no such run folder")
    if not info_path.is_file() or not (d / "adapter").is_dir():
        raise DataError(f"{d}: not an LLM run folder (no {RUN_INFO} and adapter/)")
    try:
        info = json.loads(info_path.read_text())
        base = str(d / info["base"]) if info.get("relative") else str(info["base"])
        dtype = str(info.get("base_dtype", "float32"))
        quantization = str(info.get("base_quantization", "none"))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{info_path}: malformed run info ({exc})") from None
    model, tokenizer = load_base(base, dtype=dtype, quantization=quantization)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        return PeftModel.from_pretrained(model, str(d / "adapter")), tokenizer


def generate(
    run_dir: str | Path,
    prompt: str,
    *,
    max_new_tokens: int = 40,
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 0,
) -> str:
    """Sample a continuation of ``prompt`` from the base plus the aggregated adapter."""
    import torch

    if max_new_tokens < 1:
        raise DataError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise DataError(f"temperature must be >= 0, got {temperature}")
    model, tok = load_run(run_dir)
    model.eval()
    torch.manual_seed(seed)
    enc = tok(prompt, return_tensors="pt")
    if enc["input_ids"].shape[1] == 0:
        enc = {"input_ids": torch.tensor([[tok.eos_token_id]])}
    sample = temperature > 0
    kwargs: dict[str, Any] = {"do_sample": sample, "max_new_tokens": max_new_tokens, "pad_token_id": tok.eos_token_id}
    if sample:
        kwargs.update(temperature=temperature, top_k=top_k)
    with torch.no_grad():
        out = model.generate(**enc, **kwargs)
    return str(tok.decode(out[0], skip_special_tokens=True))
