"""Config overrides from the command line: ``--set training.lr=0.1``.

Each override is ``dotted.key=value``; the value is read as a TOML value (``0.1``, ``3``,
``true``, ``"text"``, ``[16, 16]``), and a bare word that is not TOML is taken as a string
(``--set strategy.name=fedprox``). The experiment is rebuilt through the same checks as a
config file, so an unknown key gets the closest match and a wrong type or range names the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from typing import Any

from fedge.config.schema import Experiment, from_dict, to_dict
from fedge.core.errors import ConfigError


def parse_value(text: str) -> Any:
    """A TOML value, or ``text`` itself when it is not one (a bare word)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"training.lr=0.1"`` -> ``(["training", "lr"], 0.1)``."""
    key, sep, value = item.partition("=")
    path = [p.strip() for p in key.split(".")]
    if not sep or not all(path):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.lr=0.1")
    return path, parse_value(value.strip())


def _assign(raw: dict[str, Any], path: list[str], value: Any, item: str) -> None:
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: '{'.'.join(path[: i + 1])}' is a value, not a section")
        node = child
    node[path[-1]] = value


def apply_overrides(exp: Experiment, items: Sequence[str]) -> Experiment:
    """A new experiment: ``exp`` with each ``key=value`` of ``items`` set, checked like a config file."""
    if not items:
        return exp
    raw = to_dict(exp)
    for item in items:
        path, value = parse_override(item)
        _assign(raw, path, value, item)
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"--set: {exc}") from None
