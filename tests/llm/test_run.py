from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedge.clients.base import run_fit
from fedge.config import from_dict
from fedge.core.errors import ConfigError, ModelError
from fedge.core.params import nbytes
from fedge.core.types import ClientContext, TrainConfig
from fedge.engine import Callback
from fedge.llm.config import LlmConfig
from fedge.llm.run import LoraSetup, federate, generate, lora_federation, perplexities, prepare, run_experiment
from fedge.llm.strategies import FlexLoRA, LoraFedAvg
from fedge.pipeline import Pipeline, RoundContext, Transform
from fedge.simulation.history import RoundRecord
from fedge.strategies.aggregate import Terms
from fedge.strategies.base import StrategyState


def small(tiny_base: Path, tmp_path: Path, **kw: object) -> LoraSetup:
    cfg = LlmConfig(base_model=str(tiny_base), num_clients=3, docs_per_client=24, block_size=32, rank=4, **kw)
    return prepare(cfg, seed=0, workdir=tmp_path)


class Payloads(Callback):
    def __init__(self) -> None:
        self.records: list[RoundRecord] = []

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        self.records.append(record)


@pytest.mark.parametrize("make", [LoraFedAvg, FlexLoRA], ids=["lora-fedavg", "flexlora"])
def test_federated_lora_lowers_every_clients_held_out_perplexity(
    tiny_base: Path, tmp_path: Path, make: type[LoraFedAvg | FlexLoRA]
) -> None:
    strategy = make()  # a fresh instance per test: a run mutates its strategy
    setup = small(tiny_base, tmp_path)
    initial = setup.adapter.get()
    before = perplexities(setup, initial)
    seen = Payloads()
    result = federate(
        setup,
        strategy,
        rounds=3,
        clients_per_round=3,
        seed=0,
        callbacks=[seen],
        train=TrainConfig(epochs=1, batch_size=8, lr=0.05),
    )
    after = perplexities(setup, result.state.params)
    for cid in before["clients"]:
        assert after["clients"][cid] < 0.8 * before["clients"][cid], cid
    assert after["global"] < before["global"]
    assert result.history.column("test_loss")[-1] < result.history.column("test_loss")[0]
    for rec in seen.records:
        assert rec.participants == 3 and rec.uplink_bytes == 3 * setup.adapter.nbytes
        assert rec.downlink_bytes == 3 * setup.adapter.nbytes


def test_bytes_sent_per_client_equal_the_adapter_not_the_base(tiny_base: Path, tmp_path: Path) -> None:
    setup = small(tiny_base, tmp_path)
    strategy = LoraFedAvg()
    state = strategy.init(setup.adapter.get(), num_clients=3)
    ins = strategy.configure(state, 1, TrainConfig(epochs=1, batch_size=8, lr=0.05))
    for cid in range(3):
        update = run_fit(
            setup.client(cid),
            state.params,
            ins,
            ClientContext(client_id=cid, round_num=1, rng=np.random.default_rng(cid)),
            strategy=strategy,
            pipeline=Pipeline(),
        )
        assert [d.shape for d in update.delta] == [tuple(s) for s in setup.adapter.spec.shapes]
        assert update.uplink_bytes == nbytes(update.delta) == setup.adapter.nbytes
        assert update.uplink_bytes * 5 < setup.adapter.base_stats()["base_bytes"]


def test_block_longer_than_the_context_and_parallel_backends_are_refused(tiny_base: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="exceeds the model's context of 64"):
        prepare(LlmConfig(base_model=str(tiny_base), block_size=65), seed=0, workdir=tmp_path)
    setup = small(tiny_base, tmp_path)
    with pytest.raises(ConfigError, match="'ray' cannot run LoRA clients"):
        federate(setup, LoraFedAvg(), rounds=1, clients_per_round=1, train=TrainConfig(), backend="ray")

    class SumNoise(Transform):
        def aggregate(self, sums: Terms, rctx: RoundContext) -> Terms:
            return sums

    with pytest.raises(ConfigError, match=r"flexlora .* not linear .*\(SumNoise\); use lora-fedavg"):
        federate(setup, FlexLoRA(), rounds=1, clients_per_round=1, train=TrainConfig(), transforms=[SumNoise()])
    fedavg = LoraFedAvg()
    federate(setup, fedavg, rounds=1, clients_per_round=1, train=TrainConfig(), transforms=[SumNoise()])
    assert fedavg.report_gap is False


@pytest.mark.integration
def test_experiment_writes_a_run_folder_that_generates(tmp_path: Path) -> None:
    data = tmp_path / "texts"
    data.mkdir()
    for cid, word in enumerate(["alpha", "beta"]):
        (data / f"c{cid}.txt").write_text("\n\n".join(f"{word} {word} {i} {word}." for i in range(40)))
    exp = from_dict(
        {
            "rounds": 2,
            "strategy": {"name": "flexlora"},
            "training": {"clients_per_round": 2, "local_epochs": 1, "batch_size": 8, "lr": 0.05},
            "llm": {
                "enabled": True,
                "data": str(data),
                "block_size": 16,
                "rank": 2,
                "tiny_embd": 16,
                "target_modules": ["c_attn"],
                "gradient_checkpointing": True,
                "personalise_epochs": 2,
            },
            "devices": {"enabled": True, "fleet": {"pi4": 1.0}},
        }
    )
    result, out, summary = run_experiment(exp, output=str(tmp_path / "run"))
    assert len(result.history) == 2
    for rec in result.history:
        assert rec.extra["sim_time_s"] > 0 and rec.extra["ineligible"] == 0 and rec.participants == 2
    assert {"adapter", "base", "config.toml", "metrics.jsonl", "summary.json", "fedge_llm.json"} <= {
        p.name for p in out.iterdir()
    }
    written = json.loads((out / "summary.json").read_text())
    assert written["perplexity_final"]["global"] < written["perplexity_base"]["global"]
    assert written["uplink_bytes_per_client_round"] == [summary["adapter_bytes"]] * 2
    own, shared = written["perplexity_personalised"], written["perplexity_final"]
    assert set(own["clients"]) == {"0", "1"} and own["global"] < shared["global"]
    assert not list(tmp_path.glob(".run.*"))
    text = generate(out, "alpha", max_new_tokens=8, temperature=0.0)
    assert text.startswith("alpha") and len(text) > len("alpha")
    assert generate(out, "alpha", max_new_tokens=8, seed=1) == generate(out, "alpha", max_new_tokens=8, seed=1)


def test_a_run_in_which_no_update_survives_fails_with_the_reason(tmp_path: Path) -> None:
    exp = from_dict(
        {
            "rounds": 1,
            "strategy": {"name": "lora-fedavg"},
            "training": {"clients_per_round": 2, "local_epochs": 1, "batch_size": 8, "lr": 1e38},
            "llm": {
                "enabled": True,
                "num_clients": 2,
                "docs_per_client": 10,
                "block_size": 16,
                "tiny_embd": 16,
                "rank": 2,
            },
        }
    )
    why = r"no client update was usable in any round; fit: RuntimeError: .*\(clients \[0, 1\]\)"
    with pytest.raises(ModelError, match=why):
        run_experiment(exp, output=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.*"))


def test_config_transforms_act_on_the_adapter_deltas(tmp_path: Path) -> None:
    exp = from_dict(
        {
            "rounds": 1,
            "strategy": {"name": "lora-fedavg"},
            "training": {"clients_per_round": 2, "local_epochs": 1, "batch_size": 8, "lr": 0.05},
            "compression": {"codec": "int8"},
            "llm": {
                "enabled": True,
                "num_clients": 2,
                "docs_per_client": 10,
                "block_size": 16,
                "tiny_embd": 16,
                "rank": 2,
            },
        }
    )
    _, _, summary = run_experiment(exp, output=str(tmp_path / "run"))
    (sent,) = summary["uplink_bytes_per_client_round"]
    assert 0 < sent < 0.6 * summary["adapter_bytes"]
    assert summary["perplexity_final"]["global"] < summary["perplexity_base"]["global"]


def test_initial_adapter_depends_on_the_seed_not_on_what_ran_before(tiny_base: Path, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(1)
    first = small(tiny_base, tmp_path / "a").adapter.get()
    torch.rand(1000)  # what an earlier test in the same process would draw
    torch.manual_seed(2)
    second = small(tiny_base, tmp_path / "b").adapter.get()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    other = prepare(
        LlmConfig(base_model=str(tiny_base), num_clients=3, docs_per_client=24, block_size=32, rank=4),
        seed=1,
        workdir=tmp_path / "c",
    ).adapter.get()
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_central_dp_on_lora_accounts_every_writer_training_every_round(tmp_path: Path) -> None:
    """The population is the run's writers, not ``[data] num_clients``; ε is recorded every round."""
    from fedge.privacy.accountant import Accountant

    exp = from_dict(
        {
            "rounds": 2,
            "strategy": {"name": "fedavg", "weighting": "uniform"},
            "data": {"num_clients": 100},
            "training": {"clients_per_round": 0, "local_epochs": 1, "batch_size": 8, "lr": 0.05},
            "privacy": {"mode": "central", "noise_multiplier": 1.0, "clip_norm": 1.0},
            "llm": {
                "enabled": True,
                "num_clients": 3,
                "docs_per_client": 10,
                "block_size": 16,
                "tiny_embd": 16,
                "rank": 2,
            },
        }
    )
    result, _, _ = run_experiment(exp, output=str(tmp_path / "run"))
    truth = Accountant("rdp", "fixed", 3, 3)
    for rec in result.history:
        truth.step(1.0)
        assert rec.participants == 3
        assert rec.extra["sampling_rate"] == 1.0
        assert rec.extra["epsilon"] == pytest.approx(truth.epsilon(1e-5))


def test_auto_runs_lora_clients_sequentially(tiny_base: Path, tmp_path: Path) -> None:
    """The default backend is accepted and picks the one that keeps the shared base in this process."""
    setup = small(tiny_base, tmp_path)
    fed = lora_federation(
        setup, LoraFedAvg(), rounds=1, clients_per_round=2, train=TrainConfig(epochs=1, batch_size=8), backend="auto"
    )
    assert fed.backend == "sequential"
    result = fed.run()
    assert len(result.history) == 1 and result.history.rounds[0].participants == 2
