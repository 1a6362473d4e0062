"""Byzantine-robust strategies: FedAvg's state transition with a robust rule instead of the mean.

Each strategy sets ``needs_individual_updates`` so the round loop hands it every
validated update, flattens them into one matrix and applies a rule from
:mod:`fedge.robust.aggregators` (papers cited there). Robust rules weigh clients
equally: weighting by a client's self-reported example count would let a liar buy
influence. Their hyperparameters come from the ``[robust]`` config section.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np

from fedge.core.errors import AggregationError, ConfigError
from fedge.core.params import Params, ParamSpec, flatten, unflatten
from fedge.core.types import ClientUpdate, Metrics
from fedge.robust import aggregators as agg
from fedge.strategies.aggregate import F64, apply_step
from fedge.strategies.base import Strategy, StrategyState


def stack(updates: list[ClientUpdate]) -> F64:
    """Every update's delta flattened into one row of a float64 matrix."""
    if not updates:
        raise AggregationError("cannot aggregate zero updates")
    return np.stack([flatten(u.delta, dtype=np.float64) for u in updates])


class RobustStrategy(Strategy):
    """Base of the robust rules: ``w <- w + server_lr * rule(deltas)``."""

    name: ClassVar[str] = "robust-base"
    needs_individual_updates: ClassVar[bool] = True
    config_section: ClassVar[str] = "robust"

    def __init__(
        self,
        *,
        server_lr: float = 1.0,
        byzantine: int = -1,
        trim_fraction: float = 0.1,
        multi_krum_m: int = 0,
        norm_bound: float = 0.0,
        clip_tau: float = 0.0,
        clip_iters: int = 1,
    ) -> None:
        super().__init__(server_lr=server_lr, weighting="uniform")
        if byzantine < -1:
            raise ConfigError(f"robust.byzantine must be >= 0 (or -1 for the most n allows), got {byzantine}")
        if not 0 <= trim_fraction < 0.5:
            raise ConfigError(f"robust.trim_fraction must be in [0, 0.5), got {trim_fraction}")
        if multi_krum_m < 0:
            raise ConfigError(f"robust.multi_krum_m must be >= 0, got {multi_krum_m}")
        if norm_bound < 0:
            raise ConfigError(f"robust.norm_bound must be >= 0 (0 = the median norm), got {norm_bound}")
        if clip_tau < 0:
            raise ConfigError(f"robust.clip_tau must be >= 0 (0 = the median distance), got {clip_tau}")
        if clip_iters < 1:
            raise ConfigError(f"robust.clip_iters must be >= 1, got {clip_iters}")
        self.byzantine = int(byzantine)
        self.trim_fraction = float(trim_fraction)
        self.multi_krum_m = int(multi_krum_m)
        self.norm_bound = float(norm_bound)
        self.clip_tau = float(clip_tau)
        self.clip_iters = int(clip_iters)

    def f_for(self, n: int) -> int:
        """The number of Byzantine updates tolerated among ``n`` (auto: the most the rule allows)."""
        return self.byzantine if self.byzantine >= 0 else max(0, (n - 3) // 2)

    def rule(self, x: F64, state: StrategyState) -> tuple[F64, Metrics]:
        raise NotImplementedError

    def aggregate_updates(self, state: StrategyState, updates: list[ClientUpdate]) -> tuple[StrategyState, Metrics]:
        x = stack(updates)
        vec, metrics = self.rule(x, state)
        step = unflatten(vec.astype(np.float32), ParamSpec.of(state.params))
        new = replace(
            state,
            params=apply_step(state.params, step, self.server_lr),
            round_num=state.round_num + 1,
            slots={**state.slots, **self.slots_after(step)},
        )
        return new, {"robust_updates": float(len(updates)), **metrics}

    def slots_after(self, step: Params) -> dict[str, Params]:
        """State the rule keeps for the next round (none by default)."""
        return {}


class Median(RobustStrategy):
    name: ClassVar[str] = "median"

    def rule(self, x: F64, state: StrategyState) -> tuple[F64, Metrics]:
        return agg.coordinate_median(x), {}


class TrimmedMean(RobustStrategy):
    name: ClassVar[str] = "trimmed-mean"

    def rule(self, x: F64, state: StrategyState) -> tuple[F64, Metrics]:
        return agg.trimmed_mean(x, self.trim_fraction), {}


class Krum(RobustStrategy):
    name: ClassVar[str] = "krum"

    def select_count(self, n: int, f: int) -> int:
        return 1

    def rule(self, x: F64, state: StrategyState) -> tuple[F64, Metrics]:
        n = x.shape[0]
        f = self.f_for(n)
        idx = agg.krum_select(x, f, self.select_count(n, f))
        return x[idx].mean(axis=0), {"krum_selected": float(len(idx)), "byzantine_f": float(f)}


class MultiKrum(Krum):
    name: ClassVar[str] = "multi-krum"

    def select_count(self, n: int, f: int) -> int:
        return min(n, self.multi_krum_m) if self.multi_krum_m else n - f


class Bulyan(RobustStrategy):
    name: ClassVar[str] = "bulyan"

    def f_for(self, n: int) -> int:
        return self.byzantine if self.byzantine >= 0 else max(0, (n - 3) // 4)

    def rule(self, x: F64, state: StrategyState) -> tuple[F64, Metrics]:
        f = self.f_for(x.shape[0])
        return agg.bulyan(x, f), {"byzantine_f": float(f)}


class NormBound(RobustStrategy):
    name: ClassVar[str] = "norm-bound"

    def rule(self, x: F64, state: StrategyState) -> tuple[F64, Metrics]:
        return agg.norm_bounded_mean(x, self.norm_bound or None), {}


class CenteredClip(RobustStrategy):
    """Centered clipping around the previous round's aggregate (server momentum as the centre)."""

    name: ClassVar[str] = "centered-clip"

    def rule(self, x: F64, state: StrategyState) -> tuple[F64, Metrics]:
        prev = state.slots.get("cc_center")
        center = flatten(prev, dtype=np.float64) if prev else np.zeros(x.shape[1])
        return agg.centered_clip(x, center, self.clip_tau or None, self.clip_iters), {}

    def slots_after(self, step: Params) -> dict[str, Params]:
        return {"cc_center": step}


ROBUST_STRATEGIES: tuple[type[RobustStrategy], ...] = (
    Median,
    TrimmedMean,
    Krum,
    MultiKrum,
    Bulyan,
    NormBound,
    CenteredClip,
)

__all__ = [
    "ROBUST_STRATEGIES",
    "Bulyan",
    "CenteredClip",
    "Krum",
    "Median",
    "MultiKrum",
    "NormBound",
    "RobustStrategy",
    "TrimmedMean",
    "stack",
]
