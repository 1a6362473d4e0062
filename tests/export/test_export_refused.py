"""`fedge export` of a model.pt the weights-only loader refuses: one line, exit 2, nothing run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def _export(run: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedge.cli.main", "export", str(run), "--quantize", "none"],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("kind", ["pickle with code", "not a weights file"])
def test_a_refused_model_pt_is_a_one_line_error_and_exit_2(digits_run: Path, tmp_path: Path, kind: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("export"))
    marker = tmp_path / "code-ran"
    if kind == "pickle with code":
        torch.save({"0.weight": _RunsCode(marker)}, run / "model.pt")
        why = "the safe (weights-only) loader refused it: Unsupported global"
    else:
        (run / "model.pt").write_bytes(b"not a zip nor a pickle" * 10)
        why = "the safe (weights-only) loader refused it: Unsupported operand"
    res = _export(run)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {run / 'model.pt'}: does not hold weights"), lines
    assert why in lines[0]
    assert not marker.exists()
    assert not (run / "export").exists()
