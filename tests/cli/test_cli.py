"""The CLI as a user meets it: run as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FEDGE = [sys.executable, "-m", "fedge.cli.main"]


def fedge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDGE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help(tmp_path: Path) -> None:
    out = fedge("run", "--help", cwd=tmp_path)
    assert out.returncode == 0
    assert "embedded default" in out.stdout and "--rounds" in out.stdout


def test_init_then_run_small_experiment(tmp_path: Path) -> None:
    assert fedge("init", cwd=tmp_path).returncode == 0
    text = (tmp_path / "experiment.toml").read_text()
    assert "[training]" in text and "# local epochs per round" in text
    again = fedge("init", cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr
    small = text.replace("rounds = 100", "rounds = 3").replace('framework = "torch"', 'framework = "numpy"')
    (tmp_path / "small.toml").write_text(small)
    out = fedge("run", "small.toml", "-q", "-o", "out", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "out"
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.toml",
        "metrics.jsonl",
        "metrics.csv",
        "model.npz",
        "summary.json",
        "partition.json",
    }
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert all(r["participants"] == 20 for r in rows)
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("round,participants,failed,train_loss,test_loss,test_accuracy")
    with np.load(run_dir / "model.npz") as f:
        assert [f[k].shape for k in sorted(f.files)] == [(64, 64), (64,), (10, 64), (10,)]
    assert 0 < json.loads((run_dir / "summary.json").read_text())["final_test_accuracy"] <= 1


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[training]\nlocal_epoch = 3\n", "did you mean 'training.local_epochs'?"),
        ("rounds = -2\n", "rounds: must be >= 1"),
        ("[data]\ndataset = 'files'\npath = 'nope.csv'\n", "nope.csv: no such file"),
        ("[data]\ndataset = 'files'\npath = 'nan.csv'\n", "column 'f1' has a missing or NaN value at line 3"),
        ("[model]\nnum_classes = 3\n", "model outputs 3 classes but the labels go up to 9"),
        ("[training]\nbackend = 'warp'\n", "unknown backend 'warp'; valid:"),
        ("[strategy]\nname = 'fedavgg'\n", "unknown strategy 'fedavgg' (did you mean 'fedavg'?)"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "nan.csv").write_text("f0,f1,label\n1,2,0\n3,,1\n")
    (tmp_path / "bad.toml").write_text(toml)
    out = fedge("run", "bad.toml", "-q", "-o", "out", cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_missing_config_file(tmp_path: Path) -> None:
    out = fedge("run", "missing.toml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
