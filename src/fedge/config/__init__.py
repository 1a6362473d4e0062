"""Experiment configuration (TOML)."""

from fedge.config.schema import (
    SECTIONS,
    Experiment,
    embedded_default,
    from_dict,
    load,
    opt,
    register_section,
    to_dict,
    to_toml,
)

__all__ = [
    "SECTIONS",
    "Experiment",
    "embedded_default",
    "from_dict",
    "load",
    "opt",
    "register_section",
    "to_dict",
    "to_toml",
]
