"""Entry points to the user's own code: ``"package.module:attribute"`` strings.

Configs name a model factory (``[model] factory``), a data loader (``[data] loader``) and a
loss (``[training] loss``) this way. The module is imported from an installed package, the
current working directory or the folders given in ``search`` (the experiment file's folder;
``fedge join --project DIR``), which are put at the front of ``sys.path``. Every failure is
one :class:`~fedge.core.errors.ConfigError` line that names the entry point.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from fedge.core.errors import ConfigError


def add_search_paths(paths: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Put ``paths`` and the working directory at the front of ``sys.path`` (once each)."""
    for p in [os.getcwd(), *(os.fspath(x) for x in paths)]:
        full = os.path.abspath(p)
        if full not in sys.path:
            sys.path.insert(0, full)


def resolve(spec: str, *, key: str, search: Iterable[str | os.PathLike[str]] = ()) -> Callable[..., Any]:
    """The callable that ``spec`` (``"pkg.module:attr"``) names; ``key`` is the config key, for errors."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key}: {spec!r} is not an entry point; write 'package.module:function'")
    add_search_paths(search)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = ""
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            hint = "; is it in the working directory or the experiment file's folder (fedge join: --project DIR)?"
        raise ConfigError(f"{key}: cannot import {module_name!r} for {spec!r}: {exc}{hint}") from None
    except Exception as exc:
        raise ConfigError(
            f"{key}: importing {module_name!r} for {spec!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{key}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{key}: {spec!r} is a {type(target).__name__}, not a callable")
    return target  # type: ignore[no-any-return]


def call(fn: Callable[..., Any], spec: str, *, key: str, **available: Any) -> Any:
    """Call ``fn`` with those of ``available`` it accepts; an exception becomes one line naming ``spec``."""
    try:
        params = dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in available.items() if takes_all or k in params}
    try:
        return fn(**kwargs)
    except Exception as exc:
        raise ConfigError(f"{key}: {spec} raised {type(exc).__name__}: {exc}") from None
