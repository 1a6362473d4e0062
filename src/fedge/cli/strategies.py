"""``fedge strategies``: every strategy with its one-sentence description and the config keys it reads."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import shutil
import sys
import textwrap
from typing import Any

import click


def first_sentence(text: str) -> str:
    """The first sentence of a docstring's first paragraph, whole, on one line.

    A period ends the sentence when it ends the paragraph or the next word does not start
    in lower case (so "et al. (2020)" or "vs. the mean" do not cut it short).
    """
    words = inspect.cleandoc(text).partition("\n\n")[0].split()
    for i, word in enumerate(words):
        if word.endswith(".") and (i == len(words) - 1 or not words[i + 1][0].islower()):
            return " ".join(words[: i + 1])
    return " ".join(words)


def description(cls: type) -> str:
    """The strategy class's own docstring's first sentence, else its module's."""
    own = cls.__dict__.get("__doc__")
    doc = own or getattr(sys.modules.get(cls.__module__), "__doc__", None) or ""
    return first_sentence(doc)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value) if isinstance(value, float) else str(value)


def config_keys(cls: type, sections: dict[str, Any]) -> list[str]:
    """``section.key = default`` for each config key the strategy's constructor accepts.

    ``sections`` maps a config section name to its dataclass: ``strategy`` always, plus the
    strategy's own ``config_section`` (e.g. ``robust``) when it has one. The defaults are
    the config's, which is what ``fedge run`` passes when a key is not set.
    """
    accepted = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    names = ["strategy"]
    section = getattr(cls, "config_section", None)
    if section and section in sections:
        names.append(section)
    out = []
    for name in names:
        for f in dataclasses.fields(sections[name]):
            if f.name != "name" and f.name in accepted:
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc,operator]
                out.append(f"{name}.{f.name} = {_toml(default)}")
    return out


def _pack(items: list[str], width: int, first: str) -> list[str]:
    """Whole items on lines of at most ``width`` columns (an item is never split); no trailing comma."""
    items[-1] = items[-1].rstrip(",")
    lines, line = [], first
    for item in items:
        if line.strip() and line != first and len(line) + 1 + len(item) > width:
            lines.append(line)
            line = " " * len(first) + item
        else:
            line += ("" if line == first else " ") + item
    return [*lines, line]


def listing(width: int) -> str:
    """The text ``fedge strategies`` prints, wrapped to ``width`` columns."""
    from fedge.config.schema import SECTIONS, StrategyConfig
    from fedge.plugins import registry
    from fedge.strategies import REGISTRY

    for plugin in registry.plugins:  # the parts that add strategies, and only those
        if plugin.strategies:
            with contextlib.suppress(ModuleNotFoundError):
                registry.load(plugin)
    sections: dict[str, Any] = {**SECTIONS, "strategy": StrategyConfig}
    indent = "    "
    blocks = []
    for name, cls in sorted(REGISTRY.items()):
        lines = [name, textwrap.fill(description(cls), width, initial_indent=indent, subsequent_indent=indent)]
        lines += _pack([f"{k}," for k in config_keys(cls, sections)] or ["none"], width, f"{indent}keys: ")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def register(cli: click.Group) -> None:
    @cli.command("strategies")
    def strategies_cmd() -> None:
        """List the strategies: what each does and the config keys it reads, with their defaults.

        Set a strategy with `[strategy] name = "..."` in the experiment file; its keys go in
        the section named before the dot.
        """
        click.echo(listing(min(shutil.get_terminal_size((100, 24)).columns, 100)))
