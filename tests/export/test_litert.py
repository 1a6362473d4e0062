"""``--format litert`` without its converter: one line naming the install.

The converter cannot share the test environment (litert-converter pins xdsl 0.28, which
needs typing-extensions < 4.13); the conversion, runtime check, int8 and pruning paths are
checked in their own environment by ``benchmarks/export_runtimes.py`` (docs/compression.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedge.cli.main import cli

FORMAT = "litert"


def test_missing_converter_is_one_line_naming_the_install(
    digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    args = ["export", str(digits_run), "--format", FORMAT, "--quantize", "none", "-o", str(tmp_path / "x")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "pip install 'fedge[litert]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
