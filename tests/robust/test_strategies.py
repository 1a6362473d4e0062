"""Robust strategies in real runs: collapse of FedAvg under attack, recovery with a defence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from fedge.config.schema import from_dict
from fedge.core.errors import ConfigError
from fedge.core.params import Params
from fedge.core.types import ClientUpdate
from fedge.federation import build, execute, make_strategy
from fedge.robust import ROBUST_STRATEGIES, Krum, Median, MultiKrum, TrimmedMean
from fedge.robust.config import check_robust
from fedge.strategies import lookup
from fedge.strategies.base import StrategyState


def _exp(strategy: str, attack: str = "none", rounds: int = 8, **robust: Any) -> Any:
    raw: dict[str, Any] = {
        "seed": 0,
        "rounds": rounds,
        "data": {"num_clients": 20, "partition": "iid"},
        "model": {"name": "logreg", "framework": "numpy"},
        "training": {"clients_per_round": 10, "local_epochs": 1, "lr": 0.1},
        "strategy": {"name": strategy, "weighting": "uniform"},
        "attack": {"kind": attack, "fraction": 0.2},
    }
    if robust:
        raw["robust"] = robust
    return from_dict(raw)


def _accuracy(strategy: str, attack: str, **robust: Any) -> tuple[float, Any]:
    result = execute(build(_exp(strategy, attack, **robust)))
    return result.history.final_accuracy, result


def test_every_robust_strategy_is_registered_and_needs_individual_updates() -> None:
    for cls in ROBUST_STRATEGIES:
        assert lookup(cls.name) is cls
        assert cls.needs_individual_updates


@pytest.mark.slow
def test_fedavg_collapses_under_sign_flip_and_scaling_and_defences_recover() -> None:
    clean, _ = _accuracy("fedavg", "none")
    assert clean > 0.7
    for attack in ("sign-flip", "scaling"):
        broken, result = _accuracy("fedavg", attack)
        assert broken < 0.3, attack
        assert result.history.rounds[-1].extra["attack"] == attack
        assert result.history.rounds[-1].extra["defence"] == "fedavg"
    defences: list[tuple[str, str, dict[str, Any]]] = [
        ("median", "sign-flip", {}),
        ("multi-krum", "scaling", {}),
        ("trimmed-mean", "sign-flip", {"trim_fraction": 0.4}),
    ]
    for strategy, attack, robust in defences:
        acc, result = _accuracy(strategy, attack, **robust)
        assert acc > clean - 0.03, (strategy, attack, acc, clean)
        assert result.history.rounds[-1].extra["defence"] == strategy


def test_strategy_hyperparameters_come_from_the_robust_section() -> None:
    s = make_strategy(_exp("trimmed-mean", trim_fraction=0.3))
    assert isinstance(s, TrimmedMean) and s.trim_fraction == 0.3
    k = make_strategy(_exp("multi-krum", byzantine=2, multi_krum_m=4))
    assert isinstance(k, MultiKrum) and (k.byzantine, k.multi_krum_m) == (2, 4)


def test_bad_robust_config_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"trim_fraction must be in \[0, 0.5\), got 0.5"):
        make_strategy(_exp("trimmed-mean", trim_fraction=0.5))
    with pytest.raises(ConfigError, match=r"krum with robust\.byzantine = 4 needs at least 11 clients"):
        check_robust(_exp("krum", byzantine=4))


def test_robust_strategies_refuse_secure_aggregation() -> None:
    @dataclass
    class SecAgg:
        enabled: bool = True

    exp = _exp("median")
    exp.extensions["secagg"] = SecAgg()
    with pytest.raises(ConfigError, match=r"needs every individual update.*secure aggregation"):
        check_robust(exp)
    exp.extensions["secagg"] = SecAgg(enabled=False)
    check_robust(exp)  # no error once secure aggregation is off


def _state(dim: int = 3) -> StrategyState:
    return StrategyState(params=[np.zeros(dim, dtype=np.float32)])


def _updates(rows: list[list[float]]) -> list[ClientUpdate]:
    return [ClientUpdate(i, [np.asarray(r, dtype=np.float32)], 1) for i, r in enumerate(rows)]


def test_median_strategy_steps_by_the_coordinate_median() -> None:
    new, metrics = Median(server_lr=0.5).aggregate_updates(_state(), _updates([[1, 2, 3], [2, 3, 4], [100, -100, 5]]))
    np.testing.assert_allclose(new.params[0], 0.5 * np.array([2, 2, 4]))
    assert metrics["robust_updates"] == 3 and new.round_num == 1


def test_krum_strategy_follows_the_honest_cluster() -> None:
    rows = [[1.0, 1.0, 1.0]] * 4 + [[1.1, 0.9, 1.0]] + [[50.0, 50.0, 50.0]]
    new, metrics = Krum(byzantine=1).aggregate_updates(_state(), _updates(rows))
    p: Params = new.params
    assert float(np.abs(p[0] - 1.0).max()) < 0.2
    assert metrics["byzantine_f"] == 1


def test_centered_clip_keeps_its_centre_for_the_next_round() -> None:
    from fedge.robust import CenteredClip

    rows = [[1.0, 0.0, 0.0]] * 5 + [[-1e4, 0.0, 0.0]]
    s = CenteredClip(clip_iters=3)
    first, _ = s.aggregate_updates(_state(), _updates(rows))
    centre = first.slots["cc_center"][0]
    assert 0.0 < float(centre[0]) <= 1.0
    second, _ = s.aggregate_updates(first, _updates(rows))
    np.testing.assert_allclose(second.params[0] - first.params[0], second.slots["cc_center"][0], rtol=1e-6)
    assert float(second.slots["cc_center"][0][0]) >= float(centre[0]) - 1e-6
