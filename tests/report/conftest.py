"""Shared fixtures: a real finished run, a run folder with every optional value."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from fedge.simulation.history import RoundRecord

TINY_TOML = """
seed = 3
rounds = 3
[data]
num_clients = 6
[model]
name = "logreg"
framework = "numpy"
[training]
clients_per_round = 3
local_epochs = 1
[evaluation]
federated_clients = -1
"""


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder written by a real (tiny) ``fedge`` experiment."""
    import tomllib

    from fedge.config.schema import from_dict
    from fedge.experiment import run_experiment

    out = tmp_path_factory.mktemp("runs") / "tiny"
    _, path = run_experiment(from_dict(tomllib.loads(TINY_TOML)), output=str(out))
    return path


def write_rich_run(path: Path, *, rounds: int = 6, seed: float = 0.0) -> Path:
    """A run folder whose rounds carry every optional value the report can plot."""
    path.mkdir(parents=True)
    lines = []
    for r in range(1, rounds + 1):
        rec = RoundRecord(
            round=r,
            participants=8 - (r % 3),
            failed=r % 3,
            train_loss=2.0 / r + seed,
            test_loss=2.2 / r + seed,
            test_accuracy=min(0.95, 0.3 + 0.1 * r - seed),
            fed_test_accuracy=0.25 + 0.1 * r,
            uplink_bytes=10_000 * r,
            downlink_bytes=12_000,
            wall_s=0.5,
            dropped={"deadline": list(range(r % 3))} if r % 3 else {},
            extra={
                "sim_clock_s": 900.0 * r,
                "energy_j": 40.0 + r,
                "epsilon": 0.4 * math.sqrt(r),
                "device_mix": {"zonal-controller": 5, "jetson-orin": 3},
            },
        )
        lines.append(json.dumps(rec.to_json()))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (path / "summary.json").write_text(
        json.dumps({"rounds": rounds, "client_accuracy": {str(i): 0.5 + 0.04 * i for i in range(10)}})
    )
    (path / "partition.json").write_text(
        json.dumps(
            {
                "dataset": "synthetic",
                "num_classes": 3,
                "label_histogram": [[i % 3 * 5, 10 - i % 4, i] for i in range(10)],
            }
        )
    )
    return path


@pytest.fixture(scope="session")
def make_rich_run() -> Any:
    return write_rich_run


@pytest.fixture
def rich_run(tmp_path: Path) -> Path:
    return write_rich_run(tmp_path / "rich")
