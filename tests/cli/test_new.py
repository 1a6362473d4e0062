"""``fedge new``: the files it writes; tests/deploy/test_scaffold_deploy.py runs the project."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FEDGE = [sys.executable, "-m", "fedge.cli.main"]


def fedge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDGE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_new_writes_only_its_files_and_refuses_an_existing_folder(tmp_path: Path) -> None:
    made = fedge("new", "proj", cwd=tmp_path)
    assert made.returncode == 0 and "fedge run experiment.toml" in made.stdout and "README.md" in made.stdout
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == [
        "README.md",
        "data.py",
        "experiment.toml",
        "model.py",
    ]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("user data")
    again = fedge("new", "mine", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "mine" / "keep.txt").read_text() == "user data"
