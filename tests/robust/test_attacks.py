"""Attack simulation: who is malicious, and what each attack sends."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from fedge.clients.base import ClientData, LearnerClient
from fedge.clients.numpy_models import NumpyLogReg
from fedge.core.errors import ConfigError
from fedge.core.params import flatten, sub
from fedge.core.types import ClientContext, TrainConfig, client_rng
from fedge.robust.attacks import Attack, alie_z, flip_labels, malicious_ids

CFG = TrainConfig(epochs=1, batch_size=5, lr=0.1)


def _client(cid: int, n: int = 20, classes: int = 3) -> LearnerClient:
    rng = np.random.default_rng(cid)
    x = rng.normal(0, 1, (n, 4)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int64)
    return LearnerClient(cid, NumpyLogReg(4, classes), ClientData(x, y))


def _delta(client: object, params: list[np.ndarray], cid: int) -> np.ndarray:
    ctx = ClientContext(cid, 1, client_rng(0, 1, cid))
    res = client.train(params, CFG, ctx)  # type: ignore[attr-defined]
    return flatten(sub(res.params, params), dtype=np.float64)


def test_malicious_ids_are_fixed_by_the_seed_and_the_fraction() -> None:
    a = malicious_ids(100, 0.2, seed=3)
    assert len(a) == 20 and a == malicious_ids(100, 0.2, seed=3)
    assert a != malicious_ids(100, 0.2, seed=4)
    assert all(0 <= i < 100 for i in a)
    with pytest.raises(ConfigError, match=r"attack\.fraction"):
        malicious_ids(10, 1.5, seed=0)


def test_honest_clients_are_untouched_and_malicious_ones_are_wrapped() -> None:
    attack = Attack("sign-flip", frozenset({1}), num_classes=3)
    fn = attack.wrap(_client)
    assert isinstance(fn(0), LearnerClient)
    assert not isinstance(fn(1), LearnerClient) and fn(1).client_id == 1


@pytest.mark.parametrize(("kind", "scale", "factor"), [("sign-flip", 0.0, -10.0), ("sign-flip", 3.0, -3.0)])
def test_sign_flip_sends_the_negated_scaled_update(kind: str, scale: float, factor: float) -> None:
    learner = _client(1).learner
    params = learner.init_params(0)
    honest = _delta(_client(1), params, 1)
    attacked = _delta(Attack(kind, frozenset({1}), 3, scale=scale).wrap(_client)(1), params, 1)
    np.testing.assert_allclose(attacked, factor * honest, rtol=1e-5, atol=1e-6)


def test_scaling_boosts_a_poisoned_update_by_cohort_over_server_lr() -> None:
    params = _client(2).learner.init_params(0)
    c = _client(2)
    poisoned = LearnerClient(2, c.learner, ClientData(c.data.x_train, flip_labels(c.data.y_train, 3)))
    ref = _delta(poisoned, params, 2)
    attack = Attack("scaling", frozenset({2}), 3, cohort=8, server_lr=0.5)
    np.testing.assert_allclose(_delta(attack.wrap(_client)(2), params, 2), 16.0 * ref, rtol=1e-5, atol=1e-6)


def test_label_flipping_trains_on_flipped_labels() -> None:
    assert flip_labels(np.array([0, 1, 2]), 3).tolist() == [2, 1, 0]
    params = _client(4).learner.init_params(0)
    honest = _delta(_client(4), params, 4)
    flipped = _delta(Attack("label-flip", frozenset({4}), 3).wrap(_client)(4), params, 4)
    assert not np.allclose(honest, flipped)


def test_gaussian_attack_sends_noise_of_the_given_stddev() -> None:
    params = [np.zeros((200, 50), dtype=np.float32)]

    class Flat:
        client_id = 0

        def train(self, p, cfg, ctx):  # type: ignore[no-untyped-def]
            from fedge.clients.base import TrainResult

            return TrainResult(params=p, steps=1, loss=0.0, num_examples=1)

    attack = Attack("gaussian", frozenset({0}), 3, noise_std=2.0)
    d = _delta(attack.wrap(lambda cid: Flat())(0), params, 0)  # type: ignore[arg-type,return-value]
    assert abs(float(d.std()) - 2.0) < 0.05


def test_alie_z_matches_baruch_et_al() -> None:
    s = 26 - 12
    assert alie_z(50, 12) == pytest.approx(NormalDist().inv_cdf((50 - s) / 50))
    assert alie_z(10, 2) > 0


def test_alie_sends_mean_minus_z_std_of_the_colluders_honest_updates() -> None:
    mal = frozenset({0, 1, 2})
    attack = Attack("alie", mal, 3, z=1.5, cohort=10, population=10, seed=0)
    fn = attack.wrap(_client)
    params = _client(0).learner.init_params(0)
    sent = _delta(fn(1), params, 1)
    rows = []
    for cid in sorted(mal):
        ctx = ClientContext(cid, 1, client_rng(0, 1, cid, stream=7))
        res = _client(cid).train(params, CFG, ctx)
        rows.append(flatten(sub(res.params, params), dtype=np.float64))
    x = np.stack(rows)
    np.testing.assert_allclose(sent, x.mean(0) - 1.5 * x.std(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_delta(fn(2), params, 2), sent, rtol=1e-6, atol=1e-7)


def test_unknown_attack_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"attack\.kind"):
        Attack("zombie", frozenset(), 3)
