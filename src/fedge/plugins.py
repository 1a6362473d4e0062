"""Loads the optional parts of fedge that register config sections, strategies,
transforms and backends, so the CLI and configs can find them by name.

A part whose optional dependencies are missing is skipped; its config section then
stays unknown, and using it says which extra to install.
"""

from __future__ import annotations

import importlib

OPTIONAL_MODULES: list[str] = []
"""Modules imported for their registrations (each part adds its own line)."""

_loaded = False


def load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "fedge":
                raise
            continue
