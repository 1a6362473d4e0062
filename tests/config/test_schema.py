"""Experiment TOML: every key checked, documented, and round-tripped."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedge.config import Experiment, from_dict, load, to_dict, to_toml
from fedge.core.errors import ConfigError


def test_defaults_are_the_documented_default_run() -> None:
    exp = Experiment()
    assert exp.data.dataset == "digits" and exp.data.num_clients == 100
    assert exp.data.partition == "dirichlet" and exp.data.alpha == 0.5
    assert exp.model.name == "mlp" and exp.strategy.name == "fedavg"


def test_commented_example_round_trips_to_defaults() -> None:
    exp = Experiment()
    text = to_toml(exp)  # also fills in every registered section's defaults
    assert text.count("# ") >= 30
    assert to_dict(from_dict(tomllib.loads(text))) == to_dict(exp)


def test_every_key_has_a_doc() -> None:
    lines = to_toml(Experiment()).splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("# ") and len(lines[i - 1]) > 4, line


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"training": {"local_epoch": 3}}, "unknown key 'training.local_epoch'; did you mean 'training.local_epochs'?"),
        ({"round": 3}, "unknown key 'round'; did you mean 'rounds'?"),
        ({"trainig": {}}, "unknown key 'trainig'; did you mean 'training'?"),
        ({"rounds": "ten"}, "rounds: expected an integer, got str 'ten'"),
        ({"training": {"lr": -1}}, "training.lr: must be > 0"),
        ({"training": {"lr": True}}, "training.lr: expected a number"),
        ({"data": {"partition": "dirichlett"}}, "did you mean 'dirichlet'?"),
        ({"model": {"hidden": [64, "x"]}}, "model.hidden[1]: expected an integer"),
        ({"data": 3}, "[data] must be a table"),
    ],
)
def test_bad_config_names_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_load_reports_file(tmp_path: Path) -> None:
    p = tmp_path / "e.toml"
    p.write_text("rounds = 3\n[model]\nnme = 'mlp'\n")
    with pytest.raises(ConfigError, match=r"e.toml: unknown key 'model.nme'; did you mean 'model.name'"):
        load(str(p))
    p.write_text("rounds = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(p))
    with pytest.raises(ConfigError, match="no such config file"):
        load(str(tmp_path / "missing.toml"))


def test_output_template() -> None:
    exp = from_dict({"seed": 4, "strategy": {"name": "fedprox"}})
    assert exp.output_dir() == "runs/digits-fedprox-seed4"
