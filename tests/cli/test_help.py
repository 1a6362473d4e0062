"""`fedge --help` and `fedge strategies` as a user reads them: whole sentences, never cut with "..."."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from fedge.cli.main import cli
from fedge.cli.strategies import config_keys, first_sentence

FEDGE = [sys.executable, "-m", "fedge.cli.main"]


def fedge(*args: str, columns: int = 80) -> str:
    env = {**os.environ, "COLUMNS": str(columns)}
    out = subprocess.run([*FEDGE, *args], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _flat(text: str) -> str:
    return " ".join(text.split())


def _subcommands(group: click.Group) -> list[tuple[str, click.Command]]:
    """Every subcommand, those imported only when they run included."""
    ctx = click.Context(group)
    found = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    return [(name, cmd) for name, cmd in found if cmd is not None]


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, cmd in _subcommands(group):
        found.append(((*prefix, name), cmd))
        if isinstance(cmd, click.Group):
            found += _commands(cmd, (*prefix, name))
    return found


def _cut_lines(text: str) -> list[str]:
    """Lines ending in "...", except click's usage line (``[ARGS]...``, ``RUN_DIRS...``)."""
    return [ln for ln in text.splitlines() if ln.rstrip().endswith("...") and not ln.startswith("Usage:")]


@pytest.mark.parametrize("columns", [80, 200])
def test_top_level_help_shows_every_first_sentence_whole(columns: int) -> None:
    text = fedge("--help", columns=columns)
    assert _cut_lines(text) == []
    for name, cmd in _subcommands(cli):
        sentence = first_sentence(cmd.help or "")
        assert sentence.endswith("."), name
        assert _flat(sentence) in _flat(text), name


def test_every_group_lists_its_commands_whole() -> None:
    groups = [(path, cmd) for path, cmd in _commands(cli) if isinstance(cmd, click.Group)]
    assert groups, "expected command groups such as `fedge keys`"
    for path, group in groups:
        text = fedge(*path, "--help")
        assert _cut_lines(text) == [], path
        for name, sub in _subcommands(group):
            assert _flat(first_sentence(sub.help or "")) in _flat(text), (*path, name)


def test_first_sentence_keeps_abbreviations_and_citations() -> None:
    assert first_sentence('FedAvg: McMahan et al., "Deep Networks", AISTATS 2017.\n\nMore.') == (
        'FedAvg: McMahan et al., "Deep Networks", AISTATS 2017.'
    )
    assert first_sentence("Median vs. the mean is robust. Second sentence.") == "Median vs. the mean is robust."
    assert first_sentence("No period at all") == "No period at all"


def test_strategies_lists_whole_descriptions_and_their_keys() -> None:
    from fedge.strategies import names

    text = fedge("strategies", columns=80)
    assert _cut_lines(text) == []
    assert max(len(ln) for ln in text.splitlines()) <= 100
    blocks = {b.split("\n", 1)[0]: _flat(b) for b in text.strip().split("\n\n")}
    assert set(blocks) == set(names())
    assert (
        'McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS 2017.'
        in (blocks["fedavg"])
    )
    assert "strategy.mu = 0.01" in blocks["fedprox"]
    assert "strategy.mu" not in blocks["fedavg"]
    assert "strategy.momentum = 0.9" in blocks["fedavgm"]
    assert "strategy.q = 1.0" in blocks["qfedavg"]
    assert "robust.trim_fraction = 0.1" in blocks["trimmed-mean"]


def test_keys_are_those_the_constructor_accepts_with_config_defaults() -> None:
    from dataclasses import dataclass

    from fedge.strategies.base import Strategy

    @dataclass
    class Section:
        name: str = "x"
        server_lr: float = 1.0
        alpha: float = 0.5
        unused: int = 3

    class Custom(Strategy):
        def __init__(self, *, server_lr: float = 2.0, alpha: float = 0.1) -> None:
            super().__init__(server_lr=server_lr)
            self.alpha = alpha

    assert config_keys(Custom, {"strategy": Section}) == ["strategy.server_lr = 1.0", "strategy.alpha = 0.5"]


def test_run_help_is_not_cut(tmp_path: Path) -> None:
    text = fedge("run", "--help")
    assert _cut_lines(text) == [] and "--rounds" in text
