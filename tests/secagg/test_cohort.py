"""One cohort size for every part: sampling, secure aggregation's range, attacks and accounting."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.config.schema import Experiment, from_dict
from fedge.federation import build, execute
from fedge.simulation.sampling import cohort_size, training_sampling


def secure_experiment(fraction: float, clients: int) -> Experiment:
    return from_dict(
        {
            "rounds": 2,
            "data": {"dataset": "synthetic", "num_clients": clients},
            "model": {"name": "logreg", "framework": "numpy"},
            "training": {"clients_per_round": 0, "fraction": fraction},
            "secagg": {"enabled": True, "clip": 4.0},
        }
    )


@pytest.mark.parametrize(("fraction", "clients"), [(0.25, 10), (0.15, 10), (0.35, 7)])
def test_secure_rounds_with_a_fraction_cohort_change_the_model(fraction: float, clients: int) -> None:
    """ceil(fraction × N) clients are selected and secure aggregation is sized for exactly as many."""
    built = build(secure_experiment(fraction, clients))
    result = execute(built, [])
    expected = cohort_size(built.exp.training, clients)
    assert [r.participants for r in result.history.rounds] == [expected, expected]
    assert not any(r.failed for r in result.history.rounds)
    moved = sum(float(np.abs(a - b).sum()) for a, b in zip(result.state.params, built.initial, strict=True))
    assert moved > 0


def test_cohort_size_is_the_sampling_the_round_loop_uses() -> None:
    exp = secure_experiment(0.25, 10)
    assert cohort_size(exp.training, 10) == len(
        training_sampling(exp.training).sample(list(range(10)), np.random.default_rng(0))
    )
