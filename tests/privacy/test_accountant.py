"""fedge's accounting is dp-accounting's: ε of a run recomputed independently matches."""

from __future__ import annotations

from typing import Any

import dp_accounting
import pytest
from dp_accounting import pld, rdp
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.config.schema import from_dict
from fedge.core.errors import ConfigError
from fedge.federation import build, execute
from fedge.privacy.accountant import Accountant, epsilon_for, plan_noise


def _dp_exp(rounds: int = 4, **privacy: Any) -> Any:
    return from_dict(
        {
            "seed": 1,
            "rounds": rounds,
            "data": {"num_clients": 40, "partition": "iid"},
            "model": {"name": "logreg", "framework": "numpy"},
            "training": {"clients_per_round": 8, "local_epochs": 1, "lr": 0.1},
            "strategy": {"name": "fedavg", "weighting": "uniform"},
            "privacy": {"mode": "central", "noise_multiplier": 1.3, "clip_norm": 0.5, **privacy},
        }
    )


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_reported_epsilon_of_a_poisson_run_matches_dp_accounting(accountant: str) -> None:
    result = execute(build(_dp_exp(rounds=3, sampling="poisson", accountant=accountant)))
    assert len(result.history) == 3
    for rec in result.history:
        x = rec.extra
        assert x["sampling"] == "poisson" and "Poisson" in x["privacy"]
        assert x["sampling_rate"] == 8 / 40 and x["noise_multiplier"] == 1.3
        event = dp_accounting.PoissonSampledDpEvent(
            x["sampling_rate"], dp_accounting.GaussianDpEvent(x["noise_multiplier"])
        )
        ref = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant()
        ref.compose(event, x["dp_rounds"])
        assert x["dp_rounds"] == rec.round
        assert x["epsilon"] == pytest.approx(ref.get_epsilon(x["delta"]), rel=1e-6)
    eps = [r.extra["epsilon"] for r in result.history]
    assert eps == sorted(eps) and eps[0] > 0


def test_reported_epsilon_of_a_fixed_size_run_matches_dp_accounting() -> None:
    result = execute(build(_dp_exp(sampling="fixed")))
    ref = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    for rec in result.history:
        assert rec.participants == 8 and rec.extra["sampling"] == "fixed"
        ref.compose(dp_accounting.SampledWithoutReplacementDpEvent(40, 8, dp_accounting.GaussianDpEvent(1.3 / 2)))
        assert rec.extra["epsilon"] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-6)


def test_a_run_stops_before_its_budget_is_spent() -> None:
    budget = epsilon_for(1.3, delta=1e-5, rounds=3, cohort=8, population=40, sampling="fixed") * 1.0001
    result = execute(build(_dp_exp(rounds=10, sampling="fixed", target_epsilon=budget)))
    assert len(result.history) == 3
    assert result.stopped_early and "privacy budget" in result.stopped_early
    assert result.history.rounds[-1].extra["epsilon"] <= budget
    go_on = execute(build(_dp_exp(rounds=4, sampling="fixed", target_epsilon=budget, stop_on_budget=False)))
    assert len(go_on.history) == 4 and go_on.stopped_early is None
    assert go_on.history.rounds[-1].extra["epsilon"] > budget


def test_plan_meets_the_target_tightly() -> None:
    z = plan_noise(epsilon=3.0, delta=1e-5, rounds=200, cohort=100, population=10_000)
    eps = epsilon_for(z, delta=1e-5, rounds=200, cohort=100, population=10_000)
    assert 2.99 < eps <= 3.0
    assert epsilon_for(z * 0.98, delta=1e-5, rounds=200, cohort=100, population=10_000) > 3.0


@settings(max_examples=15, deadline=None)
@given(st.floats(0.5, 3.0), st.integers(1, 50), st.integers(1, 50))
def test_epsilon_grows_with_rounds_and_shrinks_with_noise(z: float, r1: int, extra: int) -> None:
    a = epsilon_for(z, delta=1e-5, rounds=r1, cohort=10, population=1000)
    b = epsilon_for(z, delta=1e-5, rounds=r1 + extra, cohort=10, population=1000)
    c = epsilon_for(z * 1.5, delta=1e-5, rounds=r1, cohort=10, population=1000)
    assert b >= a >= c


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": 0.0}, "epsilon must be a positive finite number, got 0.0"),
        ({"epsilon": float("inf")}, "epsilon must be a positive finite number, got inf"),
        ({"delta": 0.0}, r"delta must be in \(0, 1\), got 0.0"),
        ({"delta": 1.5}, r"delta must be in \(0, 1\), got 1.5"),
        ({"cohort": 0}, r"clients per round must be in \[1, population = 100\], got 0"),
        ({"sampling": "fixed", "accountant": "pld"}, "pld accountant supports poisson sampling only"),
    ],
)
def test_bad_planning_input_is_one_clear_error(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"epsilon": 1.0, "delta": 1e-5, "rounds": 10, "cohort": 10, "population": 100, **kwargs}
    with pytest.raises(ConfigError, match=message):
        plan_noise(**args)


def test_zero_noise_is_refused() -> None:
    acc = Accountant("rdp", "poisson", 100, 10)
    with pytest.raises(ConfigError, match="noise multiplier must be > 0 with DP on, got 0"):
        acc.step(0.0)
    with pytest.raises(ConfigError, match=r"privacy\.noise_multiplier must be > 0"):
        build(_dp_exp(noise_multiplier=0.0))
