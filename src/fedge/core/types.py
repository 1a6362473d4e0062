"""The records that travel through a round: instructions out, updates and evaluations back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedge.core.params import Params

Metrics = dict[str, float]
ClientId = int


@dataclass(frozen=True)
class TrainConfig:
    """How a client trains locally this round.

    ``prox_mu`` adds FedProx's proximal term ``mu/2 * ||w - w_global||^2``;
    ``grad_correction`` is added to every gradient step (SCAFFOLD's ``c - c_i``);
    ``max_epochs`` lets a straggler do fewer epochs than ``epochs`` (partial work).
    ``anchor`` with ``anchor_lambda`` follows every SGD step with the proximal map of
    ``anchor_lambda/2 * ||w - anchor||^2``, ``w <- (w + lr*lambda*anchor) / (1 + lr*lambda)``
    (Ditto's personal objective; stable for any lambda, ``inf`` pins ``w`` to ``anchor``);
    ``frozen`` lists parameter tensors (by index) that this training leaves unchanged.
    """

    epochs: int = 1
    batch_size: int = 10
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    grad_correction: Params | None = None
    max_steps: int | None = None
    anchor: Params | None = None
    anchor_lambda: float = 0.0
    frozen: tuple[int, ...] | None = None


@dataclass
class FitInstructions:
    """What the server sends a client for one round of training."""

    round_num: int
    train: TrainConfig
    config: dict[str, Any] = field(default_factory=dict)
    """Strategy-specific values (e.g. SCAFFOLD's server control variate under ``"c"``)."""
    per_client: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Per-client :class:`TrainConfig` overrides (e.g. a straggler's ``max_steps``)."""


@dataclass
class ClientUpdate:
    """What a client sends back: its model delta (local - global) and how much data made it.

    ``extras`` carries strategy-specific tensors (SCAFFOLD's control-variate delta);
    ``payload`` carries an encoded form when a pipeline transform replaced ``delta``
    with something else on the wire (compression, masking); ``uplink_bytes`` counts
    the bytes really sent.
    """

    client_id: ClientId
    delta: Params
    num_examples: int
    metrics: Metrics = field(default_factory=dict)
    extras: dict[str, Params] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    uplink_bytes: int = 0


@dataclass
class EvalResult:
    client_id: ClientId
    num_examples: int
    loss: float
    accuracy: float
    metrics: Metrics = field(default_factory=dict)


@dataclass
class ClientContext:
    """Per-call context on the client side.

    ``state`` is the client's own persistent state across rounds (SCAFFOLD's control
    variate, error-feedback residuals): the execution backend or the device keeps it,
    the server never sees it.
    """

    client_id: ClientId
    round_num: int
    rng: np.random.Generator
    state: dict[str, Any] = field(default_factory=dict)


def client_rng(seed: int, round_num: int, client_id: int, stream: int = 0) -> np.random.Generator:
    """The random generator of one client in one round.

    It depends only on the run seed, round and client id, so every execution backend,
    in any order, draws the same numbers.
    """
    return np.random.default_rng([seed, round_num, client_id, stream])
