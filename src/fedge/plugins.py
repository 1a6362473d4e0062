"""Loads the optional parts of fedge that register config sections, strategies,
transforms and backends, so the CLI and configs can find them by name.

A part whose optional dependencies are missing is skipped; its config section then
stays unknown, and using it says which extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util

OPTIONAL_MODULES: list[str] = [
    "fedge.simulation.backends",
    "fedge.devices",
    "fedge.privacy",
    "fedge.robust",
    "fedge.compression",
    "fedge.secagg",
    "fedge.deploy",
    "fedge.report",
    "fedge.llm",
]
"""Modules imported for their registrations; one that is not there is skipped."""

_loaded = False


def load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in OPTIONAL_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "fedge":
                raise
            continue
