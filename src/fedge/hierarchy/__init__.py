"""Hierarchical federated learning in simulation: clients -> relays (vehicle gateways) -> cloud.

HierFAVG (Liu et al., ICC 2020) on fedge's seams: the relays are an execution backend
(:class:`~fedge.hierarchy.relays.HierarchyBackend`) that wraps the run's own (a backend
wrapper hook), so the cloud's strategy, the pipeline and the reducer are those of a flat
run; their cost on the virtual clock is the run's round policy
(:class:`~fedge.hierarchy.links.HierarchyPolicy`). Enable it with a ``[hierarchy]``
section (``enabled = true``); see ``docs/hierarchy.md``. Over gRPC the relays are ``fedge relay``
processes (:mod:`fedge.deploy.relay`), so ``fedge serve`` refuses the section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedge.config.schema import Experiment, opt
from fedge.core.errors import ConfigError
from fedge.hierarchy.links import IDLE_S, TIER_KEYS, HierarchyPolicy, Link, RelayCost, tier_totals
from fedge.hierarchy.relays import (
    EDGE_STREAM,
    WIRE_BYTES,
    ChildWork,
    EdgeRuntime,
    HierarchyBackend,
    RebasedReducer,
    RelayTrace,
    Topology,
    terms_bytes,
)
from fedge.plugins import Hooks

if TYPE_CHECKING:
    from fedge.federation import BuildContext, Federation
    from fedge.transport.inprocess import Backend

RELAY_MODES = ("aggregate", "forward")
EDGE_STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedopt", "fedadam", "fedyogi", "fedadagrad")
"""Strategies whose clients send a plain weighted delta, which a relay can average between edge steps."""
EDGE_BACKENDS = ("auto", "sequential", "debug", "vectorized")
"""Backends that run the edge steps in this process; ``auto`` runs them client by client (sequential)."""
"""Backends that run a relay's edge steps in this process (``kappa1 > 1``)."""


@dataclass
class HierarchyConfig:
    enabled: bool = opt(False, "hierarchical FL (HierFAVG): clients -> relays (vehicle gateways) -> cloud")
    zones_per_vehicle: int = opt(
        4, "children per relay: the zonal ECUs of one vehicle (clients v*n .. v*n+n-1 are vehicle v's)", min=1
    )
    vehicles: int = opt(0, "relays (vehicles); 0 = data.num_clients / zones_per_vehicle, else it must match", min=0)
    kappa1: int = opt(2, "κ1: edge aggregation steps a relay runs with its children per cloud round", min=1)
    relay: str = opt(
        "aggregate",
        "'aggregate': a relay sends the cloud one partial sum; 'forward': it passes on each child's update "
        "(flat FL over the same network, the baseline)",
        choices=RELAY_MODES,
    )
    device: str = opt("zonal-ecu", "device tier (the clients that train): a device catalog name")
    gateway: str = opt("zonal-ecu", "relay tier (the vehicle gateway): a catalog name; its links are the cellular WAN")
    profiles: str = opt("", "your own device profile TOML file, added to the catalog")
    precision: str = opt("fp32", "training arithmetic of the device tier", choices=("fp32", "int8"))
    lan_mbps: float = opt(
        100.0, "LAN between a zone and its gateway, Mb/s (100BASE-T1 in-vehicle Ethernet)", min=0, exclusive_min=True
    )
    lan_latency_ms: float = opt(0.1, "LAN one-way latency, ms", min=0)
    wan_uplink_mbps: float = opt(0.0, "gateway -> cloud cellular uplink, Mb/s (0 = the gateway profile's)", min=0)
    wan_downlink_mbps: float = opt(0.0, "cloud -> gateway cellular downlink, Mb/s (0 = the gateway profile's)", min=0)
    wan_latency_ms: float = opt(-1.0, "cellular one-way latency, ms (-1 = the gateway profile's)", min=-1)


def hierarchy_config(exp: Experiment) -> HierarchyConfig | None:
    """The enabled ``[hierarchy]`` section of ``exp``, else None."""
    cfg = exp.extensions.get("hierarchy")
    return cfg if isinstance(cfg, HierarchyConfig) and cfg.enabled else None


def topology(cfg: HierarchyConfig, population: int) -> Topology:
    """The relays ``cfg`` describes over ``population`` clients, refusing a count that does not add up."""
    n = cfg.zones_per_vehicle
    if population % n:
        raise ConfigError(
            f"hierarchy.zones_per_vehicle = {n} does not divide the {population} clients into whole vehicles"
        )
    if cfg.vehicles and cfg.vehicles * n != population:
        raise ConfigError(
            f"hierarchy.vehicles = {cfg.vehicles} x zones_per_vehicle = {n} is {cfg.vehicles * n} clients, "
            f"but the federation has {population}"
        )
    return Topology(population, n)


def links(cfg: HierarchyConfig) -> tuple[Link, Link, Link]:
    """The (LAN, WAN up, WAN down) links of ``cfg``, the WAN's defaults from the gateway's profile."""
    from fedge.devices import catalog, lookup

    gw = lookup(cfg.gateway, catalog(cfg.profiles or None))
    latency = gw.latency_ms if cfg.wan_latency_ms < 0 else cfg.wan_latency_ms
    return (
        Link(cfg.lan_mbps, cfg.lan_latency_ms),
        Link(cfg.wan_uplink_mbps or gw.uplink_mbps, latency),
        Link(cfg.wan_downlink_mbps or gw.downlink_mbps, latency),
    )


def validate(exp: Experiment, ctx: BuildContext) -> None:
    """Refuse, in one line, a ``[hierarchy]`` that cannot run."""
    from fedge.devices import catalog, lookup
    from fedge.strategies import lookup as strategy

    cfg = hierarchy_config(exp)
    if cfg is None:
        return
    if ctx.deployed and cfg.relay != "aggregate":
        raise ConfigError(
            "hierarchy.relay = 'forward' is flat FL over the vehicles' links: serve it without [hierarchy], "
            "each zone joining the server itself"
        )
    topology(cfg, ctx.population)
    cat = catalog(cfg.profiles or None)
    for key in ("device", "gateway"):
        try:
            lookup(getattr(cfg, key), cat)
        except ConfigError as exc:
            raise ConfigError(f"hierarchy.{key}: {exc}") from None
    if cfg.precision == "int8":
        lookup(cfg.device, cat).flops("int8")
    if cfg.relay == "forward" and cfg.kappa1 != 1:
        raise ConfigError("hierarchy.kappa1 > 1 needs relay = 'aggregate': a forwarding relay keeps no model")
    cls = strategy(exp.strategy.name)
    if cfg.relay == "aggregate" and cls is not None and cls.needs_individual_updates:
        raise ConfigError(
            f"strategy {exp.strategy.name!r} needs every client's update, which a relay sums away; "
            "use relay = 'forward' or a strategy that aggregates sums"
        )
    if cfg.kappa1 > 1 and exp.strategy.name not in EDGE_STRATEGIES:
        raise ConfigError(
            f"hierarchy.kappa1 > 1 averages plain deltas at the relay, which strategy {exp.strategy.name!r} "
            f"does not send; use kappa1 = 1 or one of {', '.join(EDGE_STRATEGIES)}"
        )
    if cfg.kappa1 > 1 and exp.training.backend not in EDGE_BACKENDS and not ctx.deployed:
        raise ConfigError(
            f"hierarchy.kappa1 > 1 runs the edge steps in this process; set training.backend to one of "
            f"{', '.join(EDGE_BACKENDS)}"
        )
    privacy = exp.extensions.get("privacy")
    if cfg.kappa1 > 1 and getattr(privacy, "mode", "off") != "off":
        raise ConfigError(
            "hierarchy.kappa1 > 1 with [privacy]: a client's update is released kappa1 times per cloud round "
            "and its relay's sum carries it through every edge step, which the accountant does not count "
            "(DP through relays counts one release per round); use kappa1 = 1"
        )
    for name in ("secagg", "async", "devices"):
        if name == "secagg" and ctx.deployed:
            continue  # served relays take part in the cloud's secure aggregation, each as one participant
        if getattr(exp.extensions.get(name), "enabled", False):
            why = {
                "secagg": "per-tier secure aggregation runs over gRPC (fedge relay --secagg), not in the "
                "simulated relays",
                "async": "relays run synchronous edge steps",
                "devices": "the hierarchy costs its own tiers (hierarchy.device and hierarchy.gateway)",
            }[name]
            raise ConfigError(f"[hierarchy] does not run with [{name}]: {why}; set {name}.enabled = false")


def behind_relays(exp: Experiment, built: Federation, backend: Backend) -> Backend:
    """The run's backend behind the relays ``[hierarchy]`` describes (unchanged when the section is off)."""
    cfg = hierarchy_config(exp)
    if cfg is None or isinstance(backend, HierarchyBackend):
        return backend
    tree = topology(cfg, built.ctx.population)
    if cfg.kappa1 > 1 and getattr(backend, "name", "") == "auto":
        from fedge.transport.inprocess import SequentialBackend

        backend = SequentialBackend()  # auto could pick worker processes, which edge steps cannot use
    return HierarchyBackend(backend, tree, cfg.kappa1, aggregate=cfg.relay == "aggregate")


def hierarchy_policy(exp: Experiment, built: Federation) -> HierarchyPolicy | None:
    """The relays' cost model on the virtual clock (None when ``[hierarchy]`` is off or the run is served)."""
    from fedge.devices import catalog, count_learner, lookup

    cfg = hierarchy_config(exp)
    if cfg is None or built.deployed:
        return None
    backend = built.transport.backend
    if built.data is None or not isinstance(backend, HierarchyBackend):
        raise ConfigError(
            "[hierarchy] groups a federated dataset's clients under relays; this federation brings its own "
            "clients or backend (fedge finetune), so set hierarchy.enabled = false"
        )
    data = built.data
    cat = catalog(cfg.profiles or None)
    lan, wan_up, wan_down = links(cfg)
    return HierarchyPolicy(
        backend,
        device=lookup(cfg.device, cat),
        gateway=lookup(cfg.gateway, cat),
        model=count_learner(built.model, data.feature_shape),
        sizes=data.num_examples(),
        train=built.train,
        lan=lan,
        wan_up=wan_up,
        wan_down=wan_down,
        precision=cfg.precision,
    )


HOOKS = Hooks(
    sections={"hierarchy": HierarchyConfig},
    backend_wrappers=[behind_relays],
    policy=hierarchy_policy,
    validate=validate,
)

__all__ = [
    "EDGE_BACKENDS",
    "EDGE_STRATEGIES",
    "EDGE_STREAM",
    "HOOKS",
    "IDLE_S",
    "RELAY_MODES",
    "TIER_KEYS",
    "WIRE_BYTES",
    "ChildWork",
    "EdgeRuntime",
    "HierarchyBackend",
    "HierarchyConfig",
    "HierarchyPolicy",
    "Link",
    "RebasedReducer",
    "RelayCost",
    "RelayTrace",
    "Topology",
    "behind_relays",
    "hierarchy_config",
    "hierarchy_policy",
    "links",
    "terms_bytes",
    "tier_totals",
    "topology",
    "validate",
]
