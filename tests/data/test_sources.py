"""The ``[data]`` sources end to end: real files in, a run folder with the name mappings out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fedge.config.schema import Experiment
from fedge.data.sources import is_natural, load_source
from fedge.experiment import run_experiment
from fedge.report.runs import load_run


def per_client_folder(root: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir()
    for k in range(n):
        m = 6 + k % 3
        pd.DataFrame({"f0": rng.normal(size=m), "f1": rng.normal(size=m), "label": rng.integers(0, 2, m)}).to_csv(
            root / f"sensor-{k}.csv", index=False
        )
    return root


def small_experiment(**data: object) -> Experiment:
    exp = Experiment()
    exp.rounds = 2
    exp.model.name, exp.model.framework = "logreg", "numpy"
    exp.training.clients_per_round = 2
    exp.training.local_epochs = 1
    for key, value in data.items():
        setattr(exp.data, key, value)
    return exp


def test_a_folder_of_12_files_is_12_clients_named_by_file(tmp_path: Path) -> None:
    exp = small_experiment(dataset="files", path=str(per_client_folder(tmp_path / "data")), num_clients=100)
    fed = load_source(exp.data, seed=0)
    assert fed.num_clients == 12 and is_natural(exp.data)
    assert fed.client_names == [f"sensor-{k}" for k in range(12)]


def test_run_folder_keeps_client_and_label_names_for_the_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 60
    cars = [f"car-{k:02d}" for k in (4, 0, 11, 7)]
    pd.DataFrame(
        {
            "speed": rng.normal(size=n),
            "blink": rng.normal(size=n),
            "state": rng.choice(["drowsy", "alert", "distracted"], n),
            "car": [cars[i % 4] for i in range(n)],
        }
    ).to_csv(tmp_path / "drive.csv", index=False)
    exp = small_experiment(
        dataset="files", path=str(tmp_path / "drive.csv"), label_column="state", client_column="car", num_clients=100
    )
    _, out = run_experiment(exp, output=str(tmp_path / "run"))
    assert json.loads((out / "clients.json").read_text()) == {
        "0": "car-00",
        "1": "car-04",
        "2": "car-07",
        "3": "car-11",
    }
    assert json.loads((out / "labels.json").read_text()) == {"0": "alert", "1": "distracted", "2": "drowsy"}
    assert json.loads((out / "summary.json").read_text())["num_clients"] == 4
    part = json.loads((out / "partition.json").read_text())
    assert len(part["label_histogram"]) == 4 and part["num_classes"] == 3
    assert load_run(out).label_names == ["alert", "distracted", "drowsy"]


def test_integer_data_writes_no_mapping_files(tmp_path: Path) -> None:
    exp = small_experiment(dataset="synthetic", num_clients=6)
    _, out = run_experiment(exp, output=str(tmp_path / "run"))
    assert not (out / "clients.json").exists() and not (out / "labels.json").exists()
    assert json.loads((out / "summary.json").read_text())["num_clients"] == 6
    assert load_run(out).label_names is None
