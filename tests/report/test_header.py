from __future__ import annotations

import html
import re
import tomllib
from pathlib import Path

from fedge.config.schema import from_dict, to_toml
from fedge.report.header import settings_rows
from fedge.report.html import write_report

EXTENDED = """
rounds = 7
seed = 11
[data]
num_clients = 40
partition = "dirichlet"
alpha = 0.3
[model]
name = "mlp"
framework = "numpy"
hidden = [16, 8]
[strategy]
name = "fedprox"
mu = 0.05
[training]
clients_per_round = 6
local_epochs = 3
lr = 0.02
batch_size = 16
backend = "debug"
[privacy]
mode = "central"
target_epsilon = 4.0
delta = 1e-6
noise_multiplier = 1.3
[compression]
codec = "qsgd"
[secagg]
enabled = true
[devices]
enabled = true
fleet = { pi4 = 0.6, orin-nano = 0.4 }
"""


def _config(text: str) -> dict[str, object]:
    """A config as a run writes it: every section resolved, then parsed back."""
    return tomllib.loads(to_toml(from_dict(tomllib.loads(text))))


def test_core_settings_are_read_from_the_config() -> None:
    rows = dict(settings_rows(_config(EXTENDED)))
    assert rows["strategy"] == "fedprox (mu = 0.05)"
    assert rows["model"] == "mlp (numpy, hidden [16, 8])"
    assert rows["partition"] == "dirichlet (α = 0.3)"
    assert rows["clients"] == "40"
    assert rows["clients per round"] == "6"
    assert (rows["rounds (configured)"], rows["local epochs"], rows["learning rate"]) == ("7", "3", "0.02")
    assert (rows["batch size"], rows["backend"], rows["seed"]) == ("16", "debug", "11")


def test_enabled_extensions_get_a_row_and_defaults_none() -> None:
    rows = dict(settings_rows(_config(EXTENDED)))
    assert "target ε = 4" in rows["privacy"] and "δ = 1e-06" in rows["privacy"]
    assert rows["compression"].startswith("uplink qsgd")
    assert rows["secure aggregation"].startswith("on")
    assert "pi4 0.6" in rows["devices"] and "orin-nano 0.4" in rows["devices"]
    plain = dict(settings_rows(_config("rounds = 2")))
    assert not {"privacy", "compression", "secure aggregation", "devices", "attack simulation"} & set(plain)
    assert plain["strategy"] == "fedavg"


def test_the_real_population_wins_over_the_configured_one() -> None:
    rows = dict(settings_rows(_config("[data]\nnum_clients = 100"), num_clients=12))
    assert rows["clients"] == "12"
    assert settings_rows({}) == []


def test_report_header_of_a_real_run(real_run: Path, tmp_path: Path) -> None:
    text = html.unescape(write_report([real_run], tmp_path / "out").read_text())
    header = text[: text.index("<figure")]
    cells = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", header))
    assert cells["strategy"] == "fedavg"
    assert cells["model"] == "logreg (numpy)"
    assert cells["clients"] == "6" and cells["clients per round"] == "3"
    assert cells["partition"].startswith("dirichlet (α = ")
    assert cells["final test accuracy"] != "–"
