"""``fedge new NAME``: a small project with its own model, data loader and experiment file.

The project runs unchanged in simulation (``fedge run experiment.toml``) and deployed
(``fedge serve experiment.toml`` + ``fedge join``), from inside its folder.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import click

from fedge.core.errors import ConfigError

FILES = ("model.py", "data.py", "experiment.toml", "README.md")
"""What ``fedge new`` writes, each from ``fedge/scaffold/<file>.txt``."""


def scaffold(target: Path) -> list[Path]:
    """Write the project into the new folder ``target``; refuses one that exists."""
    if target.exists():
        raise ConfigError(f"{target}: already exists; fedge new writes a new folder only")
    name = target.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"{name!r}: project names use letters, digits, '_', '-' and '.'")
    if not target.parent.is_dir():
        raise ConfigError(f"{target.parent}: no such folder")
    templates = resources.files("fedge.scaffold")
    texts = {f: templates.joinpath(f + ".txt").read_text() for f in FILES}
    target.mkdir()
    written = []
    for f, text in texts.items():
        path = target / f
        path.write_text(text.format(name=name) if f in ("experiment.toml", "README.md") else text)
        written.append(path)
    return written


@click.command("new")
@click.argument("name", type=click.Path(path_type=Path))
def new_cmd(name: Path) -> None:
    """Start a project NAME with your own model (model.py), data (data.py) and experiment.toml."""
    for path in scaffold(name):
        click.echo(f"wrote {path}")
    click.echo(f"next: cd {name} && fedge run experiment.toml (to deploy it: {name / 'README.md'})")


def register(cli: click.Group) -> None:
    cli.add_command(new_cmd)
