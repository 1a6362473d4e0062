"""Personalised and heterogeneous models in a configured run: the ``[personalization]`` and
``[heterofl]`` sections, and how a HeteroFL run gives each device the width that fits it.

The strategies are in :mod:`fedge.strategies` (``finetune``, ``ditto``, ``fedper``,
``fedrep``, ``heterofl``); this module only reads their options and, for HeteroFL, picks
each client's width ratio from its device profile (the ``[devices]`` fleet) with the cost
model, builds the narrower learners and hands the per-client models to the device policy.
See ``docs/personalization.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedge.config.schema import Experiment, opt
from fedge.core.errors import ConfigError
from fedge.core.types import TrainConfig
from fedge.plugins import Hooks
from fedge.strategies.base import Strategy
from fedge.strategies.heterofl import HeteroFL

if TYPE_CHECKING:
    from fedge.clients.base import Client, Learner
    from fedge.data.federated import FederatedDataset
    from fedge.devices.cost import ModelCost
    from fedge.transport.inprocess import ClientFn


@dataclass
class PersonalizationConfig:
    ditto_lambda: float = opt(
        0.1, "ditto: λ pulling each personal model toward the global one (0 = purely local)", min=0
    )
    personal_epochs: int = opt(
        0, "ditto: local epochs of the personal model per round (0 = training.local_epochs)", min=0
    )
    head_tensors: int = opt(
        2, "fedper/fedrep: the last N parameter tensors form the personal head (2 = the last layer)", min=1
    )
    head_epochs: int = opt(5, "fedrep: epochs on the head (body frozen) before the body's epochs", min=0)
    finetune_epochs: int = opt(1, "finetune: epochs each client fine-tunes the global model before evaluating", min=1)
    finetune_lr: float = opt(0.05, "finetune: learning rate of that fine-tuning", min=0, exclusive_min=True)
    finetune_batch_size: int = opt(10, "finetune: mini-batch size of that fine-tuning", min=1)


@dataclass
class HeteroFLConfig:
    ratios: list[float] = opt(  # noqa: RUF009 - opt builds a default_factory for lists
        [1.0, 0.5, 0.25, 0.125],
        "width ratios a device may get; each gets the largest whose model fits its memory "
        "and, with devices.deadline_s, its round deadline (needs [devices] enabled = true)",
    )


HOOKS = Hooks(sections={"personalization": PersonalizationConfig, "heterofl": HeteroFLConfig})
"""The sections :mod:`fedge.plugins` registers when a config first uses one."""


def width_costs(exp: Experiment, data: FederatedDataset, ratios: list[float]) -> dict[float, ModelCost]:
    """The cost-model count of the built-in model at each width ratio."""
    from fedge.devices.cost import count_learner

    return {r: count_learner(narrow_learner(exp, data, r), data.feature_shape) for r in ratios}


def narrow_learner(exp: Experiment, data: FederatedDataset, ratio: float) -> Learner:
    return _narrow(exp, data.feature_shape, exp.model.num_classes or data.num_classes, ratio)


def _narrow(exp: Experiment, feature_shape: Sequence[int], num_classes: int, ratio: float) -> Learner:
    from fedge.models import build_learner

    m = exp.model
    return build_learner(
        m.name,
        m.framework,
        feature_shape,
        num_classes,
        m.hidden,
        factory=m.factory,
        loss=exp.training.loss,
        width=ratio,
    )


def train_config(exp: Experiment) -> TrainConfig:
    t = exp.training
    return TrainConfig(
        epochs=t.local_epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )


def node_client(exp: Experiment, strategy: Strategy, full: Client, built: dict[float, Client]) -> Client:
    """The client a deployed node trains with: under HeteroFL, ``full``'s data on the learner of the
    width the server gave it (:meth:`HeteroFL.bind_view`), kept in ``built`` by width; otherwise ``full``."""
    from fedge.clients.base import LearnerClient

    if not isinstance(strategy, HeteroFL):
        return full
    ratio = strategy.ratio(full.client_id)
    if ratio == 1:
        return full
    if not isinstance(full, LearnerClient) or exp.model.name not in ("mlp", "cnn") or exp.model.factory:
        raise ConfigError("strategy 'heterofl' needs model.name = 'mlp' or 'cnn' on the node (a built-in model)")
    if ratio not in built:
        classes = exp.model.num_classes or int(full.learner.init_params(exp.seed)[-1].shape[0])
        learner = _narrow(exp, full.data.x_train.shape[1:], classes, ratio)
        built[ratio] = LearnerClient(full.client_id, learner, full.data)
    return built[ratio]


def bind_heterofl(exp: Experiment, data: FederatedDataset, strategy: Strategy, client_fn: ClientFn) -> ClientFn:
    """For a HeteroFL run: choose every client's width from the fleet, give the strategy the
    table and each client the learner of its width. Any other strategy passes through."""
    if not isinstance(strategy, HeteroFL):
        return client_fn
    from fedge.clients.base import LearnerClient
    from fedge.devices import DevicesConfig, assign_fleet, catalog, parse_mix
    from fedge.devices.widths import choose_widths

    if exp.model.name not in ("mlp", "cnn") or exp.model.factory:
        raise ConfigError("strategy 'heterofl' needs model.name = 'mlp' or 'cnn' (sub-models of a built-in model)")
    dev: DevicesConfig = exp.section("devices")
    if not dev.enabled:
        raise ConfigError(
            "strategy 'heterofl' picks each client's width from its device: set [devices] enabled = true and a fleet"
        )
    ratios = sorted({float(r) for r in exp.section("heterofl").ratios}, reverse=True)
    if not ratios or any(not 0 < r <= 1 for r in ratios):
        raise ConfigError(f"heterofl.ratios must be non-empty, each in (0, 1], got {ratios}")
    fleet = assign_fleet(
        parse_mix(dev.fleet, catalog(dev.profiles or None)),
        data.num_clients,
        np.random.default_rng([exp.seed, 0xF1EE7]),
        dev.speed_jitter,
    )
    costs = width_costs(exp, data, ratios)
    deadline = dev.deadline_s if dev.policy in ("deadline", "partial") else 0.0
    chosen, _ = choose_widths(
        fleet.profiles,
        list(fleet.speed),
        list(data.num_examples()),
        train_config(exp),
        costs,
        deadline_s=deadline,
        precision=dev.precision,
    )
    # A client no width fits gets the narrowest; the device policy then leaves it out, saying why.
    strategy.widths = {c: chosen.get(c, ratios[-1]) for c in range(data.num_clients)}
    strategy.layout = exp.model.name
    learners = {r: narrow_learner(exp, data, r) for r in ratios}

    def narrow_client(cid: int) -> LearnerClient:
        return LearnerClient(cid, learners[strategy.ratio(cid)], data.client(cid))

    return narrow_client


def declared_widths(exp: Experiment, data: FederatedDataset, strategy: Strategy) -> Callable[[int, str], None] | None:
    """For a served HeteroFL run: ``f(client_id, profile)`` gives a node that declared a device
    profile of the catalog (``fedge join --profile``) the width that profile fits, by the same
    cost model as the fleet's simulated devices (nominal speed, the client's example count);
    a node that declared none, or a name the catalog lacks, keeps the fleet's width. None for
    any other strategy."""
    if not isinstance(strategy, HeteroFL):
        return None
    from fedge.devices import DevicesConfig, catalog
    from fedge.devices.widths import choose_widths

    dev: DevicesConfig = exp.section("devices")
    known = catalog(dev.profiles or None)
    ratios = sorted({float(r) for r in exp.section("heterofl").ratios}, reverse=True)
    costs = width_costs(exp, data, ratios)
    deadline = dev.deadline_s if dev.policy in ("deadline", "partial") else 0.0
    sizes = list(data.num_examples())
    fitted: dict[tuple[int, str], float] = {}

    def bind(cid: int, profile: str) -> None:
        if profile not in known or not 0 <= cid < len(sizes):
            return
        if (cid, profile) not in fitted:
            train = train_config(exp)
            chosen, _ = choose_widths(
                [known[profile]], [1.0], [int(sizes[cid])], train, costs, deadline_s=deadline, precision=dev.precision
            )
            fitted[cid, profile] = chosen.get(0, ratios[-1])
        strategy.widths[cid] = fitted[cid, profile]

    return bind


def client_models(exp: Experiment, data: FederatedDataset, strategy: Strategy) -> list[ModelCost] | None:
    """Each client's own model cost for the device policy (HeteroFL), or None when all share one."""
    if not isinstance(strategy, HeteroFL):
        return None
    ratios = sorted(set(strategy.widths.values()))
    costs = width_costs(exp, data, ratios)
    return [costs[strategy.ratio(c)] for c in range(data.num_clients)]
