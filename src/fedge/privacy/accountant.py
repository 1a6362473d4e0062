"""Privacy accounting with Google's ``dp-accounting`` (RDP and PLD); fedge adds bookkeeping only.

One round of DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent
Language Models", ICLR 2018) is a sampled Gaussian mechanism on the sum of clipped
client updates:

* ``poisson`` sampling — every client joins independently with rate ``q = m / N``:
  ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` under add/remove-one-client
  neighbouring (RDP of Mironov et al. 2019, or the PLD accountant of Koskela et al.);
* ``fixed`` sampling — exactly ``m`` of ``N`` clients, uniformly without replacement:
  ``SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z / 2))`` under
  replace-one-client neighbouring (RDP of Wang et al., AISTATS 2019). Replacing one
  clipped update moves the sum by up to ``2C``, hence ``z / 2``. dp-accounting's PLD
  accountant does not support this event, so fixed-size sampling needs ``rdp``;
* ``none`` — no sampling amplification: every client may be in every round (at most once),
  so each round is ``GaussianDpEvent(z)`` on a sum of sensitivity ``C``. dp-accounting
  composes it under add/remove-one client, which for a Gaussian mechanism of sensitivity
  ``C`` is also the zero-out relation (one client's updates replaced by zeros, who trains
  when unchanged). This is what an asynchronous run (FedBuff) can claim: which clients land
  in a buffer depends on their speed and availability, not on a uniform sample.

The accountant keeps the run's exact sequence of ``(noise multiplier, sampling, rounds)``
and composes every round into one dp-accounting accountant, which answers ε(δ).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import dp_accounting
from dp_accounting import pld, rdp

from fedge.core.errors import ConfigError

AccountantKind = Literal["rdp", "pld"]
SamplingKind = Literal["poisson", "fixed", "none"]
ACCOUNTANTS: tuple[AccountantKind, ...] = ("rdp", "pld")
SAMPLINGS: tuple[SamplingKind, ...] = ("poisson", "fixed", "none")


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence dp-accounting's per-order convergence notes (orders it excludes) while computing."""
    log = logging.getLogger("absl")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def check_epsilon_delta(epsilon: float | None, delta: float, where: str = "") -> None:
    """Raise a one-line :class:`ConfigError` unless ``epsilon > 0`` (finite) and ``0 < delta < 1``."""
    if epsilon is not None and not (epsilon > 0 and math.isfinite(epsilon)):
        raise ConfigError(f"{where}epsilon must be a positive finite number, got {epsilon}")
    if not 0 < delta < 1:
        raise ConfigError(f"{where}delta must be in (0, 1), got {delta}")


def round_event(
    noise_multiplier: float, *, sampling: SamplingKind, population: int, cohort: int
) -> dp_accounting.DpEvent:
    """The DP event of one round: ``cohort`` of ``population`` clients, Gaussian noise ``z * C``."""
    if not noise_multiplier > 0:
        raise ConfigError(f"noise multiplier must be > 0 with DP on, got {noise_multiplier}")
    if not 1 <= cohort <= population:
        raise ConfigError(f"clients per round must be in [1, population = {population}], got {cohort}")
    if sampling == "poisson":
        return dp_accounting.PoissonSampledDpEvent(cohort / population, dp_accounting.GaussianDpEvent(noise_multiplier))
    if sampling == "fixed":
        return dp_accounting.SampledWithoutReplacementDpEvent(
            population, cohort, dp_accounting.GaussianDpEvent(noise_multiplier / 2)
        )
    if sampling == "none":
        return dp_accounting.GaussianDpEvent(noise_multiplier)
    raise ConfigError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")


def fresh_accountant(kind: AccountantKind, sampling: SamplingKind) -> dp_accounting.PrivacyAccountant:
    """A new dp-accounting accountant with the neighbouring relation ``sampling`` needs."""
    relation = (
        dp_accounting.NeighboringRelation.REPLACE_ONE
        if sampling == "fixed"
        else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    if kind == "rdp":
        return rdp.RdpAccountant(neighboring_relation=relation)
    if kind == "pld":
        if sampling == "fixed":
            raise ConfigError(
                "the pld accountant supports poisson sampling only; use accountant = 'rdp' with fixed-size sampling"
            )
        return pld.PLDAccountant(neighboring_relation=relation)
    raise ConfigError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {kind!r}")


@dataclass
class Accountant:
    """ε(δ) of a run so far: the exact sequence of rounds, replayed into dp-accounting."""

    kind: AccountantKind
    sampling: SamplingKind
    population: int
    cohort: int
    steps: list[tuple[float, int]] = field(default_factory=list)
    """Run-length list of ``(noise multiplier, rounds)``."""
    _live: dp_accounting.PrivacyAccountant | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        fresh_accountant(self.kind, self.sampling)
        if not 1 <= self.cohort <= self.population:
            raise ConfigError(f"clients per round must be in [1, population = {self.population}], got {self.cohort}")

    @property
    def sampling_rate(self) -> float:
        return 1.0 if self.sampling == "none" else self.cohort / self.population

    @property
    def rounds(self) -> int:
        return sum(n for _, n in self.steps)

    def step(self, noise_multiplier: float, rounds: int = 1) -> None:
        """Record ``rounds`` more rounds with this noise multiplier."""
        event = round_event(noise_multiplier, sampling=self.sampling, population=self.population, cohort=self.cohort)
        if self.steps and self.steps[-1][0] == noise_multiplier:
            self.steps[-1] = (noise_multiplier, self.steps[-1][1] + rounds)
        else:
            self.steps.append((noise_multiplier, rounds))
        if self._live is None:
            self._live = fresh_accountant(self.kind, self.sampling)
        with _quiet():
            self._live.compose(event, rounds)

    def epsilon(self, delta: float, *, extra: tuple[float, int] | None = None) -> float:
        """ε at ``delta`` after the recorded rounds (and ``extra`` hypothetical ones)."""
        check_epsilon_delta(None, delta)
        acc = self._live
        if extra is not None:
            acc = copy.deepcopy(acc) if acc is not None else fresh_accountant(self.kind, self.sampling)
            with _quiet():
                acc.compose(
                    round_event(extra[0], sampling=self.sampling, population=self.population, cohort=self.cohort),
                    extra[1],
                )
        if acc is None:
            return 0.0
        with _quiet():
            return float(acc.get_epsilon(delta))

    def describe(self) -> str:
        how = {
            "poisson": "Poisson sampling, add/remove-one client",
            "fixed": "fixed-size sampling without replacement, replace-one client",
            "none": "no sampling amplification (each client at most once per step), add/remove-one client",
        }[self.sampling]
        return f"{self.kind.upper()} accountant, {how}, q = {self.sampling_rate:.6g}"


def epsilon_for(
    noise_multiplier: float,
    *,
    delta: float,
    rounds: int,
    cohort: int,
    population: int,
    sampling: SamplingKind = "poisson",
    accountant: AccountantKind = "rdp",
) -> float:
    """ε after ``rounds`` identical rounds."""
    acc = Accountant(accountant, sampling, population, cohort)
    acc.step(noise_multiplier, rounds)
    return acc.epsilon(delta)


def plan_noise(
    *,
    epsilon: float,
    delta: float,
    rounds: int,
    cohort: int,
    population: int,
    sampling: SamplingKind = "poisson",
    accountant: AccountantKind = "rdp",
) -> float:
    """The smallest noise multiplier ``z`` whose run of ``rounds`` rounds is (ε, δ)-DP."""
    check_epsilon_delta(epsilon, delta)
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    if not 1 <= cohort <= population:
        raise ConfigError(f"clients per round must be in [1, population = {population}], got {cohort}")
    fresh_accountant(accountant, sampling)

    def event(z: float) -> dp_accounting.DpEvent:
        return dp_accounting.SelfComposedDpEvent(
            round_event(z, sampling=sampling, population=population, cohort=cohort), rounds
        )

    with _quiet():
        return _calibrate(event, epsilon, delta, sampling, accountant)


def _calibrate(
    event: Callable[[float], dp_accounting.DpEvent],
    epsilon: float,
    delta: float,
    sampling: SamplingKind,
    accountant: AccountantKind,
) -> float:
    rdp_z = float(
        dp_accounting.calibrate_dp_mechanism(
            lambda: fresh_accountant("rdp", sampling),
            event,
            epsilon,
            delta,
            bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-2, 1.0),
            tol=1e-5,
        )
    )
    if accountant == "rdp":
        return rdp_z
    # RDP is never tighter than PLD, so its z bounds the search from above; a very small
    # lower end would make the PLD discretisation huge.
    return float(
        dp_accounting.calibrate_dp_mechanism(
            lambda: fresh_accountant("pld", sampling),
            event,
            epsilon,
            delta,
            bracket_interval=dp_accounting.ExplicitBracketInterval(min(max(0.2, rdp_z / 3), rdp_z / 2), rdp_z * 1.001),
            tol=1e-4,
        )
    )


__all__ = [
    "ACCOUNTANTS",
    "SAMPLINGS",
    "Accountant",
    "check_epsilon_delta",
    "epsilon_for",
    "fresh_accountant",
    "plan_noise",
    "round_event",
]
