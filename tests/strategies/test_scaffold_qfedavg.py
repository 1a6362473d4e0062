"""SCAFFOLD's control variates and q-FedAvg's fair step."""

from __future__ import annotations

import numpy as np
import pytest

import fedge
from fedge.clients import NumpyLogReg
from fedge.core.types import ClientContext, ClientUpdate, FitInstructions, TrainConfig
from fedge.strategies import Accumulator, FedAvg, QFedAvg, Scaffold
from fedge.strategies.qfedavg import qffl_terms
from fedge.strategies.scaffold import STATE_KEY


def test_scaffold_client_control_option_two() -> None:
    s = Scaffold()
    c = [np.array([1.0, 2.0], np.float32)]
    ins = FitInstructions(round_num=1, train=TrainConfig(lr=0.1), config={"c": c})
    ctx = ClientContext(
        client_id=3, round_num=1, rng=np.random.default_rng(0), state={STATE_KEY: [np.array([0.5, 0.5], np.float32)]}
    )
    cfg = s.client_prepare(ins, ctx)
    assert cfg.grad_correction is not None
    np.testing.assert_allclose(cfg.grad_correction[0], [0.5, 1.5])
    delta = [np.array([-0.4, 0.2], np.float32)]
    upd = s.client_finish(
        ClientUpdate(3, delta, 5),
        global_params=[np.zeros(2, np.float32)],
        local_params=delta,
        ins=ins,
        ctx=ctx,
        steps=4,
    )
    # c_i+ = c_i - c - delta / (K lr) = [0.5-1+1, 0.5-2-0.5]
    np.testing.assert_allclose(ctx.state[STATE_KEY][0], [0.5, -2.0], rtol=1e-6)
    np.testing.assert_allclose(upd.extras["dc"][0], [0.0, -2.5], rtol=1e-6)


def test_scaffold_server_control_moves_by_mean_over_population() -> None:
    s = Scaffold()
    state = s.init([np.zeros(1, np.float32)], num_clients=4)
    acc = Accumulator()
    for i, dc in enumerate([2.0, 6.0]):
        acc.add(
            s.contribution(
                ClientUpdate(i, [np.array([1.0], np.float32)], 1, extras={"dc": [np.array([dc], np.float32)]})
            )
        )
    new, _ = s.aggregate(state, acc.sums)
    assert new.slots["c"][0][0] == pytest.approx((2.0 + 6.0) / 4)
    assert new.params[0][0] == pytest.approx(1.0)


def _clients(n: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        x = rng.normal(0, 1, (20, 4)).astype(np.float32)
        w = rng.normal(k % 2, 1, (4, 3))
        out.append((x, np.argmax(x @ w, axis=1)))
    return out


def test_scaffold_keeps_client_state_across_rounds() -> None:
    result = fedge.run(
        NumpyLogReg(4, 3), _clients(), strategy=Scaffold(), rounds=3, clients_per_round=6, lr=0.1, seed=1
    )
    assert result.state.slots["c"][0].any()
    assert np.all(np.isfinite(result.state.params[0]))


def test_qffl_terms_formula() -> None:
    delta = [np.array([0.3, -0.4])]
    big, h = qffl_terms(delta, loss=2.0, q=2.0, lipschitz=10.0)
    dw = -10.0 * delta[0]
    np.testing.assert_allclose(big[0], 4.0 * dw)
    assert h == pytest.approx(2 * 2.0 * float(dw @ dw) + 10.0 * 4.0)


def test_qfedavg_runs_and_differs_from_fedavg() -> None:
    clients = _clients()
    fair = fedge.run(NumpyLogReg(4, 3), clients, strategy=QFedAvg(q=5.0), rounds=3, clients_per_round=6, lr=0.1, seed=2)
    plain = fedge.run(NumpyLogReg(4, 3), clients, strategy=FedAvg(), rounds=3, clients_per_round=6, lr=0.1, seed=2)
    assert np.all(np.isfinite(fair.state.params[0]))
    assert not np.allclose(fair.state.params[0], plain.state.params[0])
