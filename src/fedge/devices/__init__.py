"""Edge device simulation: device catalog, cost model, availability, virtual clock, selection.

Enable it with a ``[devices]`` section (``enabled = true``); the round loop then runs
behind a :class:`DevicePolicy` that records simulated time, energy and drop reasons in
every round's ``extra``. Its :data:`HOOKS` give :mod:`fedge.plugins` the section and
that round policy. See ``docs/devices.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.config.schema import Experiment, opt
from fedge.core.errors import ConfigError
from fedge.devices.availability import (
    AlwaysOn,
    Availability,
    ChargingOnly,
    ClientTrace,
    Diurnal,
    TraceAvailability,
    load_trace,
)
from fedge.devices.cost import ClientCost, ModelCost, client_cost, count_learner, count_mlp, count_torch
from fedge.devices.policy import POLICIES, DevicePolicy
from fedge.devices.profiles import (
    DeviceProfile,
    Fleet,
    assign_fleet,
    builtin_catalog,
    catalog,
    load_profiles,
    lookup,
    parse_mix,
)
from fedge.devices.report import time_to_target, tta_table
from fedge.devices.selection import SELECTIONS, Oort
from fedge.plugins import Hooks

if TYPE_CHECKING:
    from fedge.core.types import TrainConfig
    from fedge.federation import Federation


@dataclass
class DevicesConfig:
    enabled: bool = opt(False, "simulate edge devices: virtual clock, cost model, availability")
    fleet: dict[str, float] = opt(  # noqa: RUF009 - opt builds a default_factory for dicts
        {"pi4": 0.5, "orin-nano": 0.3, "phone-mid": 0.2},
        "device mix: catalog name -> share of clients (shares sum to 1)",
    )
    profiles: str = opt("", "your own device profile TOML file, added to the catalog")
    speed_jitter: float = opt(0.25, "per-client speed variation: sigma of a lognormal multiplier", min=0)
    precision: str = opt("fp32", "training arithmetic the devices use", choices=("fp32", "int8"))
    policy: str = opt("wait_all", "round policy", choices=POLICIES)
    deadline_s: float = opt(0.0, "with deadline / partial: round deadline in simulated seconds (0 = none)", min=0)
    overcommit: float = opt(1.3, "with overcommit: select ceil(overcommit * K), keep the first K", min=1)
    selection: str = opt("uniform", "client selection", choices=SELECTIONS)
    availability: str = opt("always", "who is online when", choices=("always", "diurnal", "charging", "trace"))
    trace: str = opt("", "with availability = 'trace': FedScale client behaviour trace (pickle or JSON)")
    dropout: float = opt(0.0, "probability that a client drops out in the middle of a round", min=0, max=0.99)
    straggler_fraction: float = opt(
        0.0,
        "share of each cohort that can do only 1..E epochs (kept with policy = 'partial', dropped otherwise)",
        min=0,
        max=1,
    )
    oort_preferred_s: float = opt(0.0, "Oort: preferred round duration T in seconds (0 = its pacer)", min=0)
    oort_alpha: float = opt(2.0, "Oort: straggler penalty exponent α", min=0)


def make_availability(cfg: DevicesConfig, seed: int) -> Availability:
    if cfg.availability == "diurnal":
        return Diurnal(seed=seed)
    if cfg.availability == "charging":
        return ChargingOnly(seed=seed)
    if cfg.availability == "trace":
        if not cfg.trace:
            raise ConfigError("devices.trace: required when devices.availability = 'trace'")
        return load_trace(cfg.trace)
    return AlwaysOn()


def device_policy(
    exp: Experiment,
    *,
    population: int,
    model: ModelCost,
    sizes: Sequence[int] | np.ndarray,
    train: TrainConfig,
    client_models: Any = None,
) -> DevicePolicy:
    """The device simulation ``[devices]`` describes, for ``population`` clients training ``model``.

    ``sizes`` are the clients' training examples; ``client_models`` their HeteroFL widths.
    """
    cfg: DevicesConfig = exp.section("devices")
    mix = parse_mix(cfg.fleet, catalog(cfg.profiles or None))
    fleet = assign_fleet(mix, population, np.random.default_rng([exp.seed, 0xF1EE7]), cfg.speed_jitter)
    oort = Oort(preferred_s=cfg.oort_preferred_s, alpha=cfg.oort_alpha) if cfg.selection == "oort" else None
    return DevicePolicy(
        fleet=fleet,
        model=model,
        sizes=np.asarray(sizes),
        train=train,
        policy=cfg.policy,
        deadline_s=cfg.deadline_s,
        overcommit=cfg.overcommit,
        selection=cfg.selection,
        availability=make_availability(cfg, exp.seed),
        dropout=cfg.dropout,
        straggler_fraction=cfg.straggler_fraction,
        precision=cfg.precision,
        oort=oort,
        seed=exp.seed,
        client_models=client_models,
    )


def policy_from_config(exp: Experiment, built: Federation) -> DevicePolicy | None:
    """The :class:`DevicePolicy` an experiment's ``[devices]`` section asks for (None when off).

    A deployed run has real devices, not simulated ones; a federation that brings its own
    clients (the LoRA path) brings its own policy, costed for its model.
    """
    from fedge.personalization import client_models

    cfg: DevicesConfig = exp.section("devices")
    if not cfg.enabled or built.deployed or built.data is None:
        return None
    data = built.data
    return device_policy(
        exp,
        population=data.num_clients,
        model=count_learner(built.model, data.feature_shape),
        sizes=data.num_examples(),
        train=built.train,
        client_models=client_models(exp, data, built.strategy),
    )


HOOKS = Hooks(sections={"devices": DevicesConfig}, policy=policy_from_config)

__all__ = [
    "HOOKS",
    "POLICIES",
    "SELECTIONS",
    "AlwaysOn",
    "ChargingOnly",
    "ClientCost",
    "ClientTrace",
    "DevicePolicy",
    "DeviceProfile",
    "DevicesConfig",
    "Diurnal",
    "Fleet",
    "ModelCost",
    "Oort",
    "TraceAvailability",
    "assign_fleet",
    "builtin_catalog",
    "catalog",
    "client_cost",
    "count_learner",
    "count_mlp",
    "count_torch",
    "device_policy",
    "load_profiles",
    "load_trace",
    "lookup",
    "make_availability",
    "parse_mix",
    "policy_from_config",
    "time_to_target",
    "tta_table",
]
