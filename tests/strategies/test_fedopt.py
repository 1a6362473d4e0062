"""FedAdam / FedYogi / FedAdagrad / FedAvgM follow the papers' update rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import ConfigError
from fedge.core.types import ClientUpdate
from fedge.strategies import Accumulator, FedAdagrad, FedAdam, FedAvgM, FedYogi, Strategy


def step(strategy: Strategy, state, deltas: list[np.ndarray]):
    acc = Accumulator()
    for i, d in enumerate(deltas):
        acc.add(strategy.contribution(ClientUpdate(i, [d], 1)))
    return strategy.aggregate(state, acc.sums)[0]


vectors = st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=3, max_size=3)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(vectors, min_size=1, max_size=4),
    st.lists(vectors, min_size=1, max_size=4),
    st.sampled_from(["adam", "yogi", "adagrad"]),
)
def test_two_rounds_match_reddi_2021(r1, r2, variant) -> None:
    eta, b1, b2, tau = 0.03, 0.9, 0.99, 1e-3
    cls = {"adam": FedAdam, "yogi": FedYogi, "adagrad": FedAdagrad}[variant]
    strategy = cls(server_lr=eta, beta1=b1, beta2=b2, tau=tau)
    x0 = np.array([0.5, -1.0, 2.0], np.float32)
    state = strategy.init([x0], num_clients=10)
    x = x0.astype(np.float64)
    m = np.zeros(3)
    v = np.full(3, tau**2)
    for rnd in (r1, r2):
        deltas = [np.array(d, np.float32) for d in rnd]
        state = step(strategy, state, deltas)
        d = np.mean([dd.astype(np.float64) for dd in deltas], axis=0)
        m = b1 * m + (1 - b1) * d
        if variant == "adam":
            v = b2 * v + (1 - b2) * d * d
        elif variant == "yogi":
            v = v - (1 - b2) * d * d * np.sign(v - d * d)
        else:
            v = v + d * d
        x = x + eta * m / (np.sqrt(v) + tau)
    np.testing.assert_allclose(state.params[0], x, rtol=1e-4, atol=1e-5)
    assert state.round_num == 2


def test_fedavgm_accumulates_velocity() -> None:
    strategy = FedAvgM(momentum=0.5, server_lr=1.0)
    state = strategy.init([np.zeros(1, np.float32)], num_clients=1)
    state = step(strategy, state, [np.array([1.0], np.float32)])
    state = step(strategy, state, [np.array([1.0], np.float32)])
    # v1 = 1, x1 = 1; v2 = 0.5 + 1 = 1.5, x2 = 2.5
    assert state.params[0][0] == pytest.approx(2.5)


@pytest.mark.parametrize("kwargs", [{"beta1": 1.0}, {"beta2": -0.1}, {"tau": 0.0}])
def test_bad_hyperparameters(kwargs) -> None:
    with pytest.raises(ConfigError):
        FedAdam(**kwargs)
