"""The optional parts of fedge, declared in one table and imported only when a run uses them.

:data:`PLUGINS` says, as plain data, which config sections, strategies, execution backends
and commands each optional part owns and which extra it needs, so finding the owner of a
name imports nothing. The part's module is imported the first time one of its names is
used: a config holding its section, a strategy or backend asked for by name, a command
run. Once imported, the module's ``HOOKS`` (a :class:`Hooks`) says what it adds to a run:
section classes, strategies, backends, transform factories each at an ordering
:class:`Stage`, callbacks, a round policy, client and backend wrappers and a ``validate`` that refuses
an impossible combination in one line.

The :class:`Registry` applies the hooks of the parts an experiment uses, in a fixed
order (stage, then table order), so nothing depends on which part was imported first. A
part whose third-party dependencies are missing gives one line naming the
``pip install 'fedge[...]'`` that installs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from fedge.config.schema import Experiment
    from fedge.data.federated import FederatedDataset
    from fedge.engine import Callback, RoundPolicy
    from fedge.experiment import BackendWrapper, CallbackFactory, ClientWrapper, PolicyFactory, TransformFactory
    from fedge.federation import BuildContext, Federation
    from fedge.pipeline import Transform
    from fedge.strategies.base import Strategy
    from fedge.transport.inprocess import Backend, ClientFn


Kind = Literal["sections", "strategies", "backends"]
"""The kinds of name a plugin owns and the registry looks up."""


class Stage(IntEnum):
    """Where a part's transforms sit on the client; the server undoes them in reverse order."""

    CLIP = 10
    """Clipping each update to a norm bound."""
    NOISE = 20
    """Differential-privacy noise (the DP transforms clip first, then add noise)."""
    ENCODE = 30
    """Compression codecs: what travels is the encoded update."""
    MASK = 40
    """Secure-aggregation masking: always last, the server sees only the cohort's sum."""


@dataclass(frozen=True)
class Command:
    """A ``fedge`` subcommand: its name, the module whose ``register(cli)`` adds it, its line in ``--help``."""

    name: str
    module: str
    help: str


@dataclass(frozen=True)
class Plugin:
    """One optional part of fedge, as data: what it owns by name, imported only when used."""

    name: str
    module: str
    """Imported when one of the names below is used; its ``HOOKS`` says what it adds."""
    sections: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    commands: tuple[Command, ...] = ()
    extra: str = ""
    """The fedge extra that installs its third-party dependencies ('' = none beyond fedge's own)."""
    every_run: bool = False
    """Its hooks apply to every experiment, not only to those using one of its names."""


@dataclass(frozen=True)
class Hooks:
    """What an optional part adds once imported (its module's ``HOOKS``)."""

    sections: Mapping[str, type] = field(default_factory=dict)
    strategies: Sequence[type[Strategy]] = ()
    backends: Mapping[str, Callable[[], Backend]] = field(default_factory=dict)
    transforms: Sequence[tuple[Stage, TransformFactory]] = ()
    callbacks: Sequence[CallbackFactory] = ()
    policy: PolicyFactory | None = None
    client_wrappers: Sequence[ClientWrapper] = ()
    backend_wrappers: Sequence[BackendWrapper] = ()
    """Wrap a simulated run's execution backend (applied when the in-process transport is built)."""
    validate: Callable[[Experiment, BuildContext], None] | None = None
    """Raises a one-line :class:`~fedge.core.errors.ConfigError` for a combination that cannot run."""


PLUGINS: tuple[Plugin, ...] = (
    Plugin("personalization", "fedge.personalization", sections=("personalization", "heterofl")),
    Plugin("async", "fedge.engine.asynchronous", sections=("async",)),
    Plugin("hierarchy", "fedge.hierarchy", sections=("hierarchy",)),
    Plugin(
        "engine",
        "fedge.simulation.backends",
        sections=("engine",),
        backends=("vectorized", "processes", "ray", "auto"),
    ),
    Plugin(
        "devices",
        "fedge.devices",
        sections=("devices",),
        commands=(
            Command(
                "devices", "fedge.cli.devices", "List the device catalog (edge device profiles for the simulation)."
            ),
        ),
    ),
    Plugin(
        "privacy",
        "fedge.privacy",
        sections=("privacy",),
        commands=(
            Command(
                "privacy", "fedge.cli.privacy", "Differential privacy: plan noise for a budget, or compute ε of a run."
            ),
        ),
        extra="privacy",
    ),
    Plugin(
        "robust",
        "fedge.robust",
        sections=("robust", "attack"),
        strategies=("median", "trimmed-mean", "krum", "multi-krum", "bulyan", "norm-bound", "centered-clip"),
    ),
    Plugin(
        "compression",
        "fedge.compression",
        sections=("compression",),
        commands=(
            Command(
                "export",
                "fedge.cli.compression",
                "Export RUN_DIR's model to ONNX, LiteRT or ExecuTorch: prune, quantise, check and report.",
            ),
        ),
    ),
    Plugin("secagg", "fedge.secagg", sections=("secagg",), extra="secure"),
    Plugin(
        "deploy",
        "fedge.deploy",
        sections=("deploy",),
        commands=(
            Command(
                "serve", "fedge.cli.deploy", "Run the federation in CONFIG for remote nodes (`fedge join`) over gRPC."
            ),
            Command("join", "fedge.cli.deploy", "Join the federation at SERVER and train until the run ends."),
            Command("relay", "fedge.cli.deploy", "Relay between a parent and children for hierarchical FL."),
            Command("keys", "fedge.cli.deploy", "Node key pairs for authenticating to a fedge server."),
            Command(
                "certs", "fedge.cli.deploy", "TLS certificates for `fedge serve`, `fedge join` and `fedge status`."
            ),
            Command("status", "fedge.cli.deploy", "Show a running server's nodes, current round and last metrics."),
        ),
        extra="grpc",
    ),
    Plugin(
        "report",
        "fedge.report",
        sections=("dashboard", "tracking"),
        commands=(
            Command(
                "report",
                "fedge.cli.report",
                "Write a self-contained HTML report of RUN_DIR (two or more: a comparison).",
            ),
        ),
        extra="report",
    ),
    Plugin(
        "llm",
        "fedge.llm",
        sections=("llm",),
        strategies=("lora-fedavg", "flexlora"),
        commands=(
            Command("finetune", "fedge.cli.llm", "Federated LoRA fine-tuning of a causal language model."),
            Command("generate", "fedge.cli.llm", "Sample from RUN_DIR's base model plus its aggregated LoRA adapter."),
        ),
        extra="llm",
    ),
)
"""Every optional part of fedge, in the order their hooks apply within one stage (the first,
personalization, is part of the core: it only declares sections)."""

CORE_COMMANDS: tuple[Command, ...] = (
    Command(
        "new",
        "fedge.cli.new",
        "Start a project NAME with your own model (model.py), data (data.py) and experiment.toml.",
    ),
    Command(
        "strategies",
        "fedge.cli.strategies",
        "List the strategies: what each does and the config keys it reads, with their defaults.",
    ),
)
"""Subcommands of the core that live in their own module (``run`` and ``init`` are in ``fedge.cli.main``)."""


def _is_third_party(exc: ModuleNotFoundError) -> bool:
    return not (exc.name and exc.name.split(".")[0] == "fedge")


class Registry:
    """The optional parts by name; imports each the first time it is used and keeps its hooks."""

    def __init__(self, plugins: Iterable[Plugin] = PLUGINS) -> None:
        self.plugins: list[Plugin] = list(plugins)
        self._hooks: dict[str, Hooks] = {}
        self.skipped: dict[str, str] = {}
        """Plugin name -> the missing package that kept it from loading."""

    # -- the table: lookups that import nothing
    def _owner(self, kind: Kind, name: str) -> Plugin | None:
        for plugin in self.plugins:
            if name in getattr(plugin, kind):
                return plugin
        return None

    def section_owner(self, name: str) -> Plugin | None:
        return self._owner("sections", name)

    def strategy_owner(self, name: str) -> Plugin | None:
        return self._owner("strategies", name)

    def backend_owner(self, name: str) -> Plugin | None:
        return self._owner("backends", name)

    def names(self, kind: Kind) -> list[str]:
        """Every declared name of ``kind`` (``sections``, ``strategies``, ``backends``)."""
        return [n for p in self.plugins for n in getattr(p, kind)]

    def commands(self) -> list[tuple[Command, Plugin | None]]:
        return [(c, None) for c in CORE_COMMANDS] + [(c, p) for p in self.plugins for c in p.commands]

    # -- loading
    def add(self, plugin: Plugin, hooks: Hooks) -> None:
        """Add a part whose hooks are already at hand (a user's own plugin, or a test's)."""
        self.plugins = [p for p in self.plugins if p.name != plugin.name] + [plugin]
        self._install(plugin, hooks)

    def loaded(self, name: str) -> bool:
        return name in self._hooks

    def hooks(self, name: str) -> Hooks:
        """The hooks of plugin ``name``, importing it first if needed."""
        plugin = next((p for p in self.plugins if p.name == name), None)
        if plugin is None:
            raise KeyError(f"no plugin named {name!r}")
        return self.load(plugin)

    def load(self, plugin: Plugin) -> Hooks:
        """Import ``plugin``'s module (once) and register what it supplies.

        Raises :class:`ModuleNotFoundError` when a third-party package it needs is missing.
        """
        if plugin.name in self._hooks:
            return self._hooks[plugin.name]
        try:
            module = importlib.import_module(plugin.module)
        except ModuleNotFoundError as exc:
            if not _is_third_party(exc):
                raise
            self.skipped[plugin.name] = exc.name or "an optional package"
            raise
        hooks = getattr(module, "HOOKS", None)
        if not isinstance(hooks, Hooks):
            raise TypeError(f"{plugin.module} has no HOOKS (a fedge.plugins.Hooks)")
        self._install(plugin, hooks)
        return hooks

    def _install(self, plugin: Plugin, hooks: Hooks) -> None:
        from fedge.config.schema import register_section
        from fedge.strategies import register
        from fedge.transport.inprocess import BACKENDS

        for name, cls in hooks.sections.items():
            register_section(name, cls)
        for strategy in hooks.strategies:
            register(strategy)
        BACKENDS.update(hooks.backends)
        self._hooks[plugin.name] = hooks

    def _require(self, plugin: Plugin, why: str) -> Hooks:
        """``load``, with a missing dependency turned into one line naming the extra to install."""
        try:
            return self.load(plugin)
        except ModuleNotFoundError as exc:
            from fedge.core.extras import MissingExtraError

            raise MissingExtraError(self.missing_message(plugin, exc.name or "", why)) from None

    @staticmethod
    def missing_message(plugin: Plugin, missing: str, why: str) -> str:
        from fedge.core.extras import missing_message

        fallback = f"{why} needs {missing}, which is not installed"
        if plugin.extra:
            fallback += f": pip install 'fedge[{plugin.extra}]'"
        return missing_message(missing, why) or fallback

    def load_all(self) -> list[Plugin]:
        """Import every installed part (what ``fedge init`` documents); those missing a package are skipped."""
        done = []
        for plugin in self.plugins:
            try:
                self.load(plugin)
            except ModuleNotFoundError:
                continue
            done.append(plugin)
        return done

    def load_section(self, name: str) -> bool:
        """Import the part owning config section ``name``; False when no part declares it."""
        plugin = self.section_owner(name)
        if plugin is None:
            return False
        self._require(plugin, f"the [{name}] section")
        return True

    def load_strategy(self, name: str) -> None:
        """Import the part owning strategy ``name``, if one does."""
        if (plugin := self.strategy_owner(name)) is not None:
            self._require(plugin, f"strategy {name!r}")

    def load_backend(self, name: str) -> None:
        """Import the part owning execution backend ``name``, if one does."""
        if (plugin := self.backend_owner(name)) is not None:
            self._require(plugin, f"training.backend = {name!r}")

    def missing_section(self, section: str) -> str | None:
        """Why config section ``section`` cannot be used (the extra to install); None when it can, or is unknown."""
        plugin = self.section_owner(section)
        if plugin is None:
            return None
        try:
            self.load(plugin)
        except ModuleNotFoundError as exc:
            return self.missing_message(plugin, exc.name or "", f"the [{section}] section")
        return None

    # -- what an experiment gets
    def used_by(self, exp: Experiment) -> list[tuple[Plugin, Hooks]]:
        """The parts ``exp`` uses (its sections, strategy and backend), imported, in table order."""
        for name in list(exp.extensions):
            if (plugin := self.section_owner(name)) is not None:
                self._require(plugin, f"the [{name}] section")
        self.load_strategy(exp.strategy.name)
        self.load_backend(exp.training.backend)
        sections, strategy, backend = set(exp.extensions), exp.strategy.name, exp.training.backend
        out = []
        for plugin in self.plugins:
            hooks = self._hooks.get(plugin.name)
            if hooks is None:
                continue
            if (
                plugin.every_run
                or sections & set(plugin.sections)
                or strategy in plugin.strategies
                or backend in plugin.backends
            ):
                out.append((plugin, hooks))
        return out

    def validate(self, exp: Experiment, ctx: BuildContext) -> None:
        """Refuse, in one line, a combination of parts that cannot run together (for the federation ``ctx``)."""
        for _, hooks in self.used_by(exp):
            if hooks.validate is not None:
                hooks.validate(exp, ctx)

    def transforms(self, exp: Experiment, ctx: BuildContext) -> list[Transform]:
        """The client-side transforms ``exp``'s parts add, in stage order (clip, noise, encode, mask)."""
        staged = [
            (stage, i, factory) for i, (_, hooks) in enumerate(self.used_by(exp)) for stage, factory in hooks.transforms
        ]
        staged.sort(key=lambda s: (s[0], s[1]))
        return [t for _, _, factory in staged for t in factory(exp, ctx)]

    def callbacks(self, exp: Experiment, built: Federation) -> list[Callback]:
        return [cb for _, hooks in self.used_by(exp) for factory in hooks.callbacks for cb in factory(exp, built)]

    def policies(self, exp: Experiment, built: Federation) -> list[RoundPolicy]:
        """The round policies ``exp``'s parts ask for (a run may have at most one)."""
        return [
            p
            for _, hooks in self.used_by(exp)
            if hooks.policy is not None and (p := hooks.policy(exp, built)) is not None
        ]

    def wrap_backend(self, exp: Experiment, built: Federation, backend: Backend) -> Backend:
        for _, hooks in self.used_by(exp):
            for wrap in hooks.backend_wrappers:
                backend = wrap(exp, built, backend)
        return backend

    def wrap_client(self, exp: Experiment, data: FederatedDataset, client_fn: ClientFn) -> ClientFn:
        for _, hooks in self.used_by(exp):
            for wrap in hooks.client_wrappers:
                client_fn = wrap(exp, data, client_fn)
        return client_fn


registry = Registry()
"""The registry every entry point uses."""


def missing_section(section: str) -> str | None:
    """Why config section ``section`` is unknown when its part cannot be imported (the extra to install)."""
    return registry.missing_section(section)


def load_plugins() -> None:
    """Import every installed optional part at once; runs and commands import only what they use."""
    registry.load_all()
