"""The run summary tells the truth about the data: the real client count and how it was split."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def test_summary_counts_the_clients_of_a_folder_of_12_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for k in range(12):
        pd.DataFrame({"f0": rng.normal(size=8), "label": rng.integers(0, 2, 8)}).to_csv(
            tmp_path / "data" / f"client-{k}.csv", index=False
        )
    (tmp_path / "exp.toml").write_text(
        "rounds = 1\n"
        '[data]\ndataset = "files"\npath = "data"\nnum_clients = 100\n'
        '[model]\nname = "logreg"\nframework = "numpy"\n'
        "[training]\nclients_per_round = 3\nlocal_epochs = 1\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "fedge.cli.main", "run", "exp.toml", "-q", "-o", "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "files (12 clients, one per file)" in out.stdout
    assert "100 clients" not in out.stdout
