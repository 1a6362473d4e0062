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

SECTION_MODULES = {
    "engine": "fedge.simulation.backends",
    "devices": "fedge.devices",
    "privacy": "fedge.privacy",
    "robust": "fedge.robust",
    "attack": "fedge.robust",
    "compression": "fedge.compression",
    "secagg": "fedge.secagg",
    "deploy": "fedge.deploy",
    "dashboard": "fedge.report",
    "tracking": "fedge.report",
    "llm": "fedge.llm",
}
"""The optional module that registers each config section."""

SKIPPED: dict[str, str] = {}
"""Optional module -> the missing package that made :func:`load_plugins` skip it."""

_loaded = False


def missing_section(section: str) -> str | None:
    """Why config section ``section`` is unknown when its module was skipped (the extra to install)."""
    from fedge.core.extras import missing_message

    module = SECTION_MODULES.get(section)
    missing = SKIPPED.get(module or "")
    if missing is None:
        return None
    return missing_message(missing, f"the [{section}] section") or f"[{section}]: {module} needs {missing}"


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
            SKIPPED[name] = exc.name or "an optional package"
            continue
