"""The ``[privacy]`` config section and how an experiment is built from it.

``mode = "central"`` adds :class:`~fedge.privacy.transforms.CentralDP` to the pipeline,
an accountant, and a callback that records ε every round and stops the run before the
budget ``target_epsilon`` would be exceeded. ``sampling = "poisson"`` installs a round
policy that lets every client join independently with rate ``clients_per_round / N``.
``mode = "local"`` adds :class:`~fedge.privacy.transforms.LocalDP`.

Combinations whose sensitivity cannot be bounded are refused with a
:class:`~fedge.core.errors.ConfigError`: example-count weighting (a client's weight is
its own, unbounded, claim), strategies that add terms of their own (SCAFFOLD, q-FedAvg)
and strategies that aggregate individual updates (the robust rules, which never see the
noised sum).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedge.config.schema import Experiment, opt
from fedge.core.errors import ConfigError
from fedge.engine import Callback, RoundPolicy, StopRun
from fedge.pipeline import Transform
from fedge.privacy.accountant import Accountant, check_epsilon_delta
from fedge.privacy.transforms import AdaptiveClipping, CentralDP, LocalDP
from fedge.simulation.history import RoundRecord
from fedge.simulation.sampling import Sampling
from fedge.strategies import lookup
from fedge.strategies.base import Strategy, StrategyState

if TYPE_CHECKING:
    from fedge.federation import BuildContext, Federation


@dataclass
class PrivacyConfig:
    mode: str = opt(
        "off",
        "differential privacy: central (DP-FedAvg) or local (noise on the client)",
        choices=("off", "central", "local"),
    )
    clip_norm: float = opt(
        1.0, "L2 bound C on each client's update (adaptive: its starting value)", min=0, exclusive_min=True
    )
    clip_at: str = opt(
        "server", "where updates are clipped; client composes with secure aggregation", choices=("server", "client")
    )
    noise_multiplier: float = opt(
        1.0, "central: z, noise stddev z*C on the sum (plan it with `fedge privacy plan`)", min=0
    )
    delta: float = opt(1e-5, "δ at which ε is reported", min=0, exclusive_min=True, max=1)
    target_epsilon: float = opt(0.0, "central: privacy budget ε (0 = none)", min=0)
    stop_on_budget: bool = opt(True, "central: stop the run before a round would exceed target_epsilon")
    accountant: str = opt("rdp", "dp-accounting accountant (pld needs poisson sampling)", choices=("rdp", "pld"))
    sampling: str = opt(
        "fixed",
        "central: client sampling the accounting assumes: a fixed-size cohort, "
        "poisson (each client joins with rate clients_per_round / N), "
        "or none (no amplification; what [async] needs)",
        choices=("fixed", "poisson", "none"),
    )
    adaptive_clip: bool = opt(False, "central: adapt C to a quantile of the update norms (Andrew et al.)")
    target_quantile: float = opt(0.5, "adaptive clipping: target share of unclipped updates", min=0, max=1)
    clip_lr: float = opt(0.2, "adaptive clipping: geometric step size", min=0, exclusive_min=True)
    count_noise: float = opt(
        0.0,
        "adaptive clipping: stddev of the noise on the unclipped count "
        "(0 = max(clients per round / 20, noise_multiplier))",
        min=0,
    )
    local_mechanism: str = opt("gaussian", "local: noise mechanism", choices=("gaussian", "laplace"))
    local_epsilon: float = opt(8.0, "local: ε of each client's update per round", min=0)
    local_delta: float = opt(1e-5, "local, gaussian: δ of each client's update per round", min=0, max=1)


def cohort_size(exp: Experiment, population: int) -> int:
    """The expected number of clients per round ``m``."""
    from fedge.simulation.sampling import cohort_size as training_cohort

    return training_cohort(exp.training, population)


def check_central(exp: Experiment, strategy: type[Strategy] | None) -> None:
    """Refuse, in one line, a strategy whose per-client sensitivity central DP cannot bound."""
    name = exp.strategy.name
    if strategy is None:
        return
    if strategy.needs_individual_updates:
        raise ConfigError(
            f"privacy.mode = 'central' cannot be combined with strategy {name!r}: it "
            "aggregates individual updates, so the noised sum is never used"
        )
    if strategy.contribution is not Strategy.contribution:
        raise ConfigError(
            f"privacy.mode = 'central' cannot bound the sensitivity of strategy {name!r}, "
            "which sums terms of its own; use fedavg, fedprox, fedavgm or the fedopt family"
        )
    if exp.strategy.weighting != "uniform":
        raise ConfigError(
            "privacy.mode = 'central' needs strategy.weighting = 'uniform': example-count "
            f"weights make one client's influence unbounded (got {exp.strategy.weighting!r})"
        )


def privacy_transforms(exp: Experiment, ctx: BuildContext | None = None) -> Sequence[Transform]:
    if ctx is None:
        from fedge import federation

        ctx = federation.BuildContext.from_config(exp)
    if "privacy" not in exp.extensions:
        return []
    p: PrivacyConfig = exp.section("privacy")
    if p.mode == "off":
        return []
    if p.mode == "local":
        if p.local_mechanism == "gaussian":
            check_epsilon_delta(p.local_epsilon, p.local_delta, "privacy.local_")
        return [LocalDP(p.local_mechanism, p.clip_norm, p.local_epsilon, p.local_delta)]
    check_epsilon_delta(p.target_epsilon or None, p.delta, "privacy.")
    if not p.noise_multiplier > 0:
        raise ConfigError(
            f"privacy.noise_multiplier must be > 0 with privacy.mode = 'central', got "
            f"{p.noise_multiplier} (plan one with `fedge privacy plan`)"
        )
    check_central(exp, lookup(exp.strategy.name))
    secagg = exp.extensions.get("secagg")
    if secagg is not None and getattr(secagg, "enabled", False):
        if p.clip_at == "server":
            raise ConfigError(
                "privacy.clip_at = 'server' cannot see masked updates under [secagg]; set privacy.clip_at = 'client'"
            )
        if p.adaptive_clip:
            raise ConfigError(
                "privacy.adaptive_clip sends each client's clipping bit in the clear, "
                "which [secagg] would not protect; turn one of them off"
            )
    population, m = ctx.population, ctx.cohort
    accountant = Accountant(p.accountant, p.sampling, population, m)  # type: ignore[arg-type]
    adaptive = None
    if p.adaptive_clip:
        adaptive = AdaptiveClipping(p.target_quantile, p.clip_lr, p.count_noise or max(m / 20, p.noise_multiplier))
    return [
        CentralDP(
            clip_norm=p.clip_norm,
            noise_multiplier=p.noise_multiplier,
            expected_clients=m,
            accountant=accountant,
            delta=p.delta,
            clip_at=p.clip_at,
            adaptive=adaptive,
        )
    ]


class PrivacyBudget(Callback):
    """Records ε in every round (also rounds that released nothing) and enforces the budget.

    With ``target_epsilon`` and ``stop`` the run ends after the last round whose successor
    would push ε past the budget, so the reported ε never exceeds it.
    """

    def __init__(self, dp: CentralDP, target_epsilon: float = 0.0, stop: bool = True) -> None:
        if dp.accountant is None:
            raise ConfigError("a privacy budget needs an accountant")
        self.dp = dp
        self.accountant = dp.accountant
        self.target = target_epsilon
        self.stop = stop

    def epsilon(self) -> float:
        return self.accountant.epsilon(self.dp.delta)

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        if "epsilon" not in record.extra:
            record.extra.update(
                epsilon=self.epsilon(),
                delta=self.dp.delta,
                sampling=self.accountant.sampling,
                sampling_rate=self.accountant.sampling_rate,
                accountant=self.accountant.kind,
                dp_rounds=self.accountant.rounds,
            )
        record.extra["privacy"] = self.accountant.describe()
        if self.target and self.stop:
            nxt = self.accountant.epsilon(self.dp.delta, extra=(self.dp.noise_multiplier, 1))
            if nxt > self.target:
                raise StopRun(
                    f"privacy budget: epsilon = {record.extra['epsilon']:.4g} after round "
                    f"{record.round}, one more round would reach {nxt:.4g} > target "
                    f"{self.target:g} (delta = {self.dp.delta:g})"
                )


def budget_callbacks(exp: Experiment, transforms: Sequence[Transform], population: int) -> list[Callback]:
    """The :class:`PrivacyBudget` of a run whose pipeline holds central DP over ``population`` clients."""
    if "privacy" not in exp.extensions:
        return []
    p: PrivacyConfig = exp.section("privacy")
    dps = [t for t in transforms if isinstance(t, CentralDP)]
    if p.mode != "central" or not dps:
        return []
    acc = dps[0].accountant
    if acc is not None and acc.population != population:
        raise ConfigError(
            f"privacy: the data has {population} clients but the accounting "
            f"assumed data.num_clients = {acc.population}; set data.num_clients to match"
        )
    return [PrivacyBudget(dps[0], p.target_epsilon, p.stop_on_budget)]


def privacy_callbacks(exp: Experiment, built: Federation) -> Sequence[Callback]:
    return budget_callbacks(exp, built.pipeline.transforms, built.ctx.population)


class PoissonSampling(RoundPolicy):
    """Every available client joins independently with probability ``rate`` (the accounting's assumption)."""

    def __init__(self, rate: float) -> None:
        if not 0 < rate <= 1:
            raise ConfigError(f"poisson sampling rate must be in (0, 1], got {rate}")
        self.rate = rate

    def select(self, round_num: int, available: list[int], sampling: Sampling, rng: np.random.Generator) -> list[int]:
        ids = np.asarray(sorted(available), dtype=np.int64)
        return [int(i) for i in ids[rng.random(len(ids)) < self.rate]]


def privacy_policy(exp: Experiment, built: Federation) -> RoundPolicy | None:
    if "privacy" not in exp.extensions:
        return None
    p: PrivacyConfig = exp.section("privacy")
    if p.mode != "central" or p.sampling != "poisson":
        return None
    return PoissonSampling(built.ctx.cohort / built.ctx.population)


__all__ = [
    "PoissonSampling",
    "PrivacyBudget",
    "PrivacyConfig",
    "check_central",
    "cohort_size",
    "privacy_callbacks",
    "privacy_policy",
    "privacy_transforms",
]
