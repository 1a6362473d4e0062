"""FedOpt: Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (Algorithm 2).

With the mean client delta ``Δ_t`` as pseudo-gradient (ascent direction):

* ``m_t = β1 m_{t-1} + (1 - β1) Δ_t``
* FedAdagrad: ``v_t = v_{t-1} + Δ_t²``
* FedYogi:    ``v_t = v_{t-1} - (1 - β2) Δ_t² sign(v_{t-1} - Δ_t²)``
* FedAdam:    ``v_t = β2 v_{t-1} + (1 - β2) Δ_t²``
* ``x_{t+1} = x_t + η m_t / (√v_t + τ)``

``v_{-1} = τ²`` and ``m_{-1} = 0`` as in the paper; no bias correction.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ConfigError
from fedge.core.params import Params
from fedge.core.types import Metrics
from fedge.strategies.aggregate import Terms
from fedge.strategies.base import Strategy, StrategyState, Weighting

F32 = npt.NDArray[np.float32]
Variant = Literal["adam", "yogi", "adagrad"]


def first_moment(m: F32, delta: F32, beta1: float) -> F32:
    return (beta1 * m + (1.0 - beta1) * delta).astype(np.float32)


def second_moment(v: F32, delta: F32, beta2: float, variant: Variant) -> F32:
    d2 = delta * delta
    if variant == "adagrad":
        out = v + d2
    elif variant == "yogi":
        out = v - (1.0 - beta2) * d2 * np.sign(v - d2)
    else:
        out = beta2 * v + (1.0 - beta2) * d2
    return np.asarray(out, dtype=np.float32)


def adaptive_step(x: F32, m: F32, v: F32, eta: float, tau: float) -> F32:
    return (x + eta * m / (np.sqrt(v) + tau)).astype(np.float32)


class FedOpt(Strategy):
    """Server-side adaptive optimiser over the mean client delta."""

    name: ClassVar[str] = "fedopt"
    variant: ClassVar[Variant] = "adam"

    def __init__(
        self,
        *,
        server_lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        weighting: Weighting = "examples",
    ) -> None:
        super().__init__(server_lr=server_lr, weighting=weighting)
        for key, val in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= val < 1:
                raise ConfigError(f"strategy.{key} must be in [0, 1), got {val}")
        if not tau > 0:
            raise ConfigError(f"strategy.tau must be positive, got {tau}")
        self.beta1, self.beta2, self.tau = float(beta1), float(beta2), float(tau)

    def init(self, params: Params, *, num_clients: int) -> StrategyState:
        state = super().init(params, num_clients=num_clients)
        state.slots["m"] = [np.zeros_like(p) for p in params]
        state.slots["v"] = [np.full_like(p, self.tau**2) for p in params]
        return state

    def aggregate(self, state: StrategyState, sums: Terms) -> tuple[StrategyState, Metrics]:
        delta = self.mean_delta(sums)
        m = [first_moment(mi, d, self.beta1) for mi, d in zip(state.slots["m"], delta, strict=True)]
        v = [second_moment(vi, d, self.beta2, self.variant) for vi, d in zip(state.slots["v"], delta, strict=True)]
        x = [adaptive_step(xi, mi, vi, self.server_lr, self.tau) for xi, mi, vi in zip(state.params, m, v, strict=True)]
        return replace(state, params=x, slots={**state.slots, "m": m, "v": v}, round_num=state.round_num + 1), {}


class FedAdam(FedOpt):
    name: ClassVar[str] = "fedadam"
    variant: ClassVar[Variant] = "adam"


class FedYogi(FedOpt):
    name: ClassVar[str] = "fedyogi"
    variant: ClassVar[Variant] = "yogi"


class FedAdagrad(FedOpt):
    name: ClassVar[str] = "fedadagrad"
    variant: ClassVar[Variant] = "adagrad"
