from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedge.cli.main import cli

LLM = """
rounds = 1
[strategy]
name = "lora-fedavg"
[training]
clients_per_round = 2
local_epochs = 1
batch_size = 8
lr = 0.05
[llm]
enabled = true
num_clients = 2
docs_per_client = 12
block_size = 16
tiny_embd = 16
torch_threads = 1
"""


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def write(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "exp.toml"
    p.write_text(LLM + extra)
    return p


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("rank = 0\n", "llm.rank: must be >= 1, got 0"),
        ('base_model = "/no/such/model"\n', "base model path /no/such/model does not exist"),
        ('target_modules = ["q_proj"]\n', "'q_proj' matches no layer; the model's layers: transformer.h.0.attn.c_attn"),
    ],
)
def test_bad_llm_input_is_one_line_and_exit_2(tmp_path: Path, extra: str, message: str) -> None:
    res = CliRunner().invoke(cli, ["finetune", str(write(tmp_path, extra)), "-q", "-o", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.*"))


def test_finetune_needs_the_llm_section_enabled(tmp_path: Path) -> None:
    p = tmp_path / "plain.toml"
    p.write_text("rounds = 1\n")
    res = CliRunner().invoke(cli, ["finetune", str(p)])
    assert res.exit_code == 2 and "enabled = true" in res.output


def test_plain_run_refuses_an_llm_experiment(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["run", str(write(tmp_path)), "-q", "-o", str(tmp_path / "run")])
    assert res.exit_code == 2 and "fedge finetune" in res.output
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_finetune_then_generate(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(cli, ["finetune", str(write(tmp_path)), "-q", "-o", str(run_dir)])
    assert res.exit_code == 0, res.output
    assert "held-out perplexity: base" in res.output and "client 1:" in res.output
    res = CliRunner().invoke(
        cli, ["generate", str(run_dir), "--prompt", "turn", "--max-new-tokens", "5", "--temperature", "0"]
    )
    assert res.exit_code == 0, res.output
    assert res.output.startswith("turn")
    res = CliRunner().invoke(cli, ["generate", str(tmp_path / "missing"), "--prompt", "x"])
    assert res.exit_code == 2 and "no such run folder" in res.output
    res = CliRunner().invoke(cli, ["generate", str(tmp_path), "--prompt", "x"])
    assert res.exit_code == 2 and "not an LLM run folder" in res.output
