"""The [hierarchy] section: impossible combinations are refused in one line (exit 2 on the CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fedge.cli.main import cli
from fedge.config.schema import from_dict
from fedge.core.errors import ConfigError
from fedge.federation import build
from fedge.hierarchy import HierarchyBackend


def _exp(hierarchy: dict[str, Any], **extra: Any) -> Any:
    raw: dict[str, Any] = {
        "rounds": 1,
        "data": {"num_clients": 12},
        "model": {"name": "logreg", "framework": "numpy"},
        "training": {"clients_per_round": 4},
        "hierarchy": {"enabled": True, "zones_per_vehicle": 4, **hierarchy},
    }
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value}
    return from_dict(raw)


@pytest.mark.parametrize(
    ("hierarchy", "extra", "message"),
    [
        ({"zones_per_vehicle": 5}, {}, "zones_per_vehicle = 5 does not divide the 12 clients into whole vehicles"),
        ({"vehicles": 4}, {}, "vehicles = 4 x zones_per_vehicle = 4 is 16 clients, but the federation has 12"),
        ({"device": "zonal-ecuu"}, {}, "hierarchy.device: unknown device 'zonal-ecuu'; did you mean 'zonal-ecu'"),
        ({"gateway": "modem"}, {}, "hierarchy.gateway: unknown device 'modem'"),
        ({"precision": "int8"}, {}, "device 'zonal-ecu' has no int8 throughput"),
        ({"relay": "forward", "kappa1": 2}, {}, "kappa1 > 1 needs relay = 'aggregate'"),
        ({"kappa1": 2}, {"strategy": {"name": "qfedavg"}}, "which strategy 'qfedavg' does not send"),
        ({"kappa1": 1}, {"strategy": {"name": "median"}}, "strategy 'median' needs every client's update"),
        ({"kappa1": 2}, {"training": {"backend": "processes"}}, "set training.backend to one of auto, sequential"),
        ({"kappa1": 2}, {"privacy": {"mode": "central"}}, "hierarchy.kappa1 > 1 with [privacy]"),
        ({}, {"secagg": {"enabled": True}}, "[hierarchy] does not run with [secagg]"),
        ({}, {"devices": {"enabled": True}}, "[hierarchy] does not run with [devices]"),
        ({}, {"async": {"enabled": True, "buffer_size": 2, "concurrency": 4}}, "does not run with [async]"),
    ],
)
def test_impossible_combinations_are_refused_in_one_line(
    hierarchy: dict[str, Any], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build(_exp(hierarchy, **extra))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_served_run_builds_with_the_section_and_refuses_only_what_relays_cannot_serve() -> None:
    """Served, the section describes the `fedge relay` processes: no in-process relays, no cost model."""
    from fedge.hierarchy import hierarchy_policy

    fed = build(_exp({}), deployed=True)
    assert fed.deployed and hierarchy_policy(fed.config, fed) is None
    with pytest.raises(ConfigError, match=r"relay = 'forward' is flat FL"):
        build(_exp({"relay": "forward", "kappa1": 1}), deployed=True)
    with pytest.raises(ConfigError, match=r"does not run with \[async\]"):
        build(_exp({}, **{"async": {"enabled": True, "buffer_size": 2, "concurrency": 4}}), deployed=True)


def test_a_disabled_section_leaves_the_run_flat() -> None:
    fed = build(_exp({"enabled": False, "zones_per_vehicle": 5}))
    fed.extras()
    assert not isinstance(fed.transport.backend, HierarchyBackend)


def test_the_cli_refuses_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "exp.toml"
    cfg.write_text(
        "rounds = 1\n[data]\nnum_clients = 10\n[model]\nname = 'logreg'\nframework = 'numpy'\n"
        "[hierarchy]\nenabled = true\nzones_per_vehicle = 4\n"
    )
    res = CliRunner().invoke(cli, ["run", str(cfg), "-q", "-o", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert "does not divide the 10 clients" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_zonal_driver_state_config_builds_60_cars_of_3_zones() -> None:
    from fedge.config.schema import load

    exp = load(str(Path(__file__).parents[2] / "examples" / "driver_state" / "zonal.toml"))
    fed = build(exp)  # the built-in digits stand in for the cars' hashed windows
    _, policy = fed.extras()
    backend = fed.transport.backend
    assert isinstance(backend, HierarchyBackend) and policy is not None
    assert backend.topology.num_relays == 60 and backend.topology.fanout == 3 and backend.kappa1 == 4
    assert policy.wan_up.mbps == 2.0 and policy.lan.mbps == 100.0


def test_engine_options_reach_the_backend_behind_the_relays() -> None:
    exp = _exp({"kappa1": 2}, training={"backend": "vectorized"}, engine={"vectorized_chunk": 3})
    fed = build(exp)
    callbacks, _ = fed.extras()
    backend = fed.transport.backend
    assert isinstance(backend, HierarchyBackend) and getattr(backend.inner, "chunk", None) == 3
    assert any(type(cb).__name__ == "RoundInfo" for cb in callbacks)
