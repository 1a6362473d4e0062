"""The plugin registry: parts imported only when used, transforms in stage order, one line for a missing extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from fedge.cli.strategies import first_sentence
from fedge.config.schema import Experiment, from_dict
from fedge.core.errors import ConfigError
from fedge.core.extras import MissingExtraError
from fedge.federation import BuildContext
from fedge.plugins import PLUGINS, Hooks, Plugin, Registry, Stage, registry
from fedge.strategies import names

HEAVY = ("dp_accounting", "ray", "transformers", "peft", "mlflow", "tensorboard")

IMPORTED = """\
import json, sys
sys.argv = ["fedge", *sys.argv[1:]]
from fedge.cli.main import main
try:
    main()
finally:
    tops = sorted({name.split(".")[0] for name in sys.modules})
    fedge = sorted(name for name in sys.modules if name.startswith("fedge."))
    print("IMPORTED " + json.dumps({"top": tops, "fedge": fedge}), flush=True)
"""


def fedge_imports(*args: str, cwd: Path) -> tuple[str, dict[str, list[str]]]:
    """Run ``fedge ARGS`` in a fresh interpreter: its output and the modules it imported."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", IMPORTED, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text, _, found = out.stdout.rpartition("IMPORTED ")
    return text, json.loads(found)


def test_fedge_strategies_lists_every_strategy_and_imports_no_heavy_extra(tmp_path: Path) -> None:
    text, imported = fedge_imports("strategies", cwd=tmp_path)
    listed = {block.split("\n", 1)[0] for block in text.strip().split("\n\n")}
    assert listed == set(names())
    assert {"median", "krum", "bulyan", "lora-fedavg", "flexlora", "fedavg", "scaffold"} <= listed
    assert [m for m in HEAVY if m in imported["top"]] == []
    assert not any(m.startswith(("fedge.privacy", "fedge.secagg", "fedge.deploy.")) for m in imported["fedge"])


@pytest.mark.integration
def test_a_default_one_round_run_imports_no_optional_part(tmp_path: Path) -> None:
    _, imported = fedge_imports("run", "--rounds", "1", "-q", "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert (tmp_path / "out" / "model.npz").is_file()
    assert [m for m in HEAVY if m in imported["top"]] == []
    assert "torch" not in imported["top"] and "sklearn" not in imported["top"]  # the NumPy MLP; digits' file
    for part in ("fedge.privacy", "fedge.secagg", "fedge.robust", "fedge.llm"):
        assert not any(m == part or m.startswith(part + ".") for m in imported["fedge"]), part
    # auto, the default backend, is the one part a default run needs; Ray is never imported (HEAVY)
    assert "fedge.simulation.backends.auto" in imported["fedge"]


def test_help_lists_every_command_from_the_table_without_importing_them(tmp_path: Path) -> None:
    text, imported = fedge_imports("--help", cwd=tmp_path)
    for command, _ in registry.commands():
        assert command.name in text
        assert " ".join(command.help.split()) in " ".join(text.split()), command.name
    assert not any(m in imported["fedge"] for m in ("fedge.cli.deploy", "fedge.cli.llm", "fedge.cli.privacy"))


def test_the_tables_help_line_is_the_commands_own_first_sentence() -> None:
    import importlib

    for command, _ in registry.commands():
        group = click.Group()
        importlib.import_module(command.module).register(group)
        assert command.name in group.commands, command
        assert first_sentence(group.commands[command.name].help or "") == command.help


def _private_secure() -> Experiment:
    return from_dict(
        {
            "data": {"num_clients": 20},
            "model": {"name": "logreg", "framework": "numpy"},
            "strategy": {"weighting": "uniform"},
            "training": {"clients_per_round": 10},
            "privacy": {"mode": "central", "clip_norm": 1.0, "noise_multiplier": 1.0, "clip_at": "client"},
            "secagg": {"enabled": True},
        }
    )


def _private_compressed() -> Experiment:
    return from_dict(
        {
            "strategy": {"weighting": "uniform"},
            "privacy": {"mode": "central", "clip_norm": 1.0, "noise_multiplier": 1.0},
            "compression": {"codec": "int8"},
        }
    )


@pytest.mark.parametrize("table_order", [1, -1])
@pytest.mark.parametrize("load_order", [1, -1])
def test_transforms_come_out_in_stage_order_whatever_order_the_parts_load_in(table_order: int, load_order: int) -> None:
    from fedge.compression import Compress
    from fedge.privacy import CentralDP
    from fedge.secagg import SecureAggregation

    for make, want in ((_private_compressed, [CentralDP, Compress]), (_private_secure, [CentralDP, SecureAggregation])):
        fresh = Registry(PLUGINS[::table_order])
        exp = make()
        for name in ["compression", "secagg", "privacy"][::load_order]:
            fresh.hooks(name)
        assert [type(t) for t in fresh.transforms(exp, BuildContext.from_config(exp))] == want


def test_a_part_applies_only_to_the_experiments_that_use_it() -> None:
    calls: list[str] = []

    def factory(exp: Experiment, ctx: BuildContext) -> list[Any]:
        calls.append(exp.strategy.name)
        return []

    fresh = Registry(PLUGINS)
    fresh.add(Plugin("mine", __name__, sections=("mine",)), Hooks(transforms=[(Stage.ENCODE, factory)]))
    assert fresh.transforms(Experiment(), BuildContext.from_config(Experiment())) == []
    assert calls == []
    exp = Experiment()
    exp.extensions["mine"] = object()
    fresh.transforms(exp, BuildContext.from_config(exp))
    assert calls == ["fedavg"]


def test_a_backend_wrapper_wraps_only_the_backends_of_experiments_using_its_part() -> None:
    from fedge.transport.inprocess import SequentialBackend

    class Wrapped(SequentialBackend):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

    fresh = Registry(PLUGINS)
    fresh.add(
        Plugin("wrapping", __name__, sections=("wrapping",)),
        Hooks(backend_wrappers=[lambda exp, built, backend: Wrapped(backend)]),
    )
    inner = SequentialBackend()
    no_federation: Any = None  # the wrapper here reads nothing of the federation
    assert fresh.wrap_backend(Experiment(), no_federation, inner) is inner
    exp = Experiment()
    exp.extensions["wrapping"] = object()
    wrapped = fresh.wrap_backend(exp, no_federation, inner)
    assert isinstance(wrapped, Wrapped) and wrapped.inner is inner


def test_validate_refuses_an_llm_experiment_in_a_plain_run() -> None:
    exp = from_dict({"llm": {"enabled": True}})
    with pytest.raises(ConfigError, match="fedge finetune"):
        registry.validate(exp, BuildContext.from_config(exp))
    # what `fedge finetune` builds its pipeline from:
    assert registry.transforms(exp, BuildContext.from_config(exp)) == []


@pytest.fixture
def missing_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A registry whose one part needs a package that is not installed."""
    (tmp_path / "fedge_test_needs_accounting.py").write_text("import dp_accounting\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # type: ignore[arg-type]
    plugin = Plugin(
        "needy",
        "fedge_test_needs_accounting",
        sections=("needy",),
        strategies=("needy-strategy",),
        backends=("needy-backend",),
        extra="privacy",
    )
    return Registry([plugin])


def test_a_section_strategy_or_backend_whose_extra_is_missing_names_the_pip_install(missing_extra: Registry) -> None:
    for load, name in (
        (missing_extra.load_section, "needy"),
        (missing_extra.load_strategy, "needy-strategy"),
        (missing_extra.load_backend, "needy-backend"),
    ):
        with pytest.raises(MissingExtraError) as info:
            load(name)
        message = str(info.value)
        assert "\n" not in message
        assert name in message and "pip install 'fedge[privacy]'" in message
    why = missing_extra.missing_section("needy")
    assert why is not None and "[needy]" in why and "pip install 'fedge[privacy]'" in why
    assert missing_extra.skipped == {"needy": "dp_accounting"}
    assert missing_extra.missing_section("unknown") is None


def test_a_run_whose_section_needs_a_missing_extra_fails_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "exp.toml").write_text('[privacy]\nmode = "central"\nnoise_multiplier = 1.0\n')
    code = (
        "import sys; sys.modules['dp_accounting'] = None; sys.argv = ['fedge', 'run', 'exp.toml', '-q']\n"
        "from fedge.cli.main import main\nmain()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert "[privacy]" in out.stderr and "pip install 'fedge[privacy]'" in out.stderr


def test_an_unknown_section_suggests_a_declared_one() -> None:
    with pytest.raises(ConfigError, match="did you mean 'compression'"):
        from_dict({"compresion": {}})


def test_every_declared_name_is_what_its_part_supplies() -> None:
    from fedge.config.schema import SECTIONS
    from fedge.strategies import REGISTRY
    from fedge.transport.inprocess import BACKENDS

    for plugin in PLUGINS:
        hooks = registry.hooks(plugin.name)
        assert set(hooks.sections) == set(plugin.sections), plugin.name
        assert {s.name for s in hooks.strategies} == set(plugin.strategies), plugin.name
        assert set(hooks.backends) == set(plugin.backends), plugin.name
        assert all(SECTIONS[s] is hooks.sections[s] for s in plugin.sections)
        assert all(REGISTRY[s.name] is s for s in hooks.strategies)
        assert all(BACKENDS[b] is hooks.backends[b] for b in plugin.backends)
