"""The NumPy-only models train exactly like the same PyTorch architecture."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.clients import NumpyLogReg, NumpyMLP
from fedge.clients.torch_learner import TorchLearner
from fedge.core.errors import ModelError
from fedge.core.types import TrainConfig
from fedge.models import torch_module


def data(n: int = 23, d: int = 5, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, c, n).astype(np.int64)


def test_gradients_match_finite_differences() -> None:
    model = NumpyMLP(5, 3, hidden=(4,))
    params = model.init_params(1)
    x, y = data()
    _, grads = model.grads(params, x, y)
    eps = 1e-3
    for t in range(len(params)):
        for idx in [(0,) * params[t].ndim, tuple(s - 1 for s in params[t].shape)]:
            plus = [p.astype(np.float64).copy() for p in params]
            minus = [p.astype(np.float64).copy() for p in params]
            plus[t][idx] += eps
            minus[t][idx] -= eps
            num = (model.grads(plus, x, y)[0] - model.grads(minus, x, y)[0]) / (2 * eps)
            assert grads[t][idx] == pytest.approx(num, rel=2e-2, abs=1e-4)


@settings(max_examples=15, deadline=None)
@given(
    hidden=st.sampled_from([(), (7,), (6, 4)]),
    momentum=st.sampled_from([0.0, 0.9]),
    wd=st.sampled_from([0.0, 0.01]),
    mu=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 100),
)
def test_training_matches_torch(hidden, momentum, wd, mu, seed) -> None:
    x, y = data(seed=seed)
    npm = NumpyMLP(5, 3, hidden=hidden)
    tl = TorchLearner(lambda: torch_module("mlp" if hidden else "logreg", (5,), 3, hidden))
    params = tl.init_params(seed)
    corr = [np.full(p.shape, 0.01, np.float32) for p in params]
    cfg = TrainConfig(
        epochs=2, batch_size=4, lr=0.1, momentum=momentum, weight_decay=wd, prox_mu=mu, grad_correction=corr
    )
    a = npm.train(params, x, y, cfg, np.random.default_rng(seed))
    b = tl.train(params, x, y, cfg, np.random.default_rng(seed))
    assert a.steps == b.steps == 12
    for pa, pb in zip(a.params, b.params, strict=True):
        np.testing.assert_allclose(pa, pb, atol=2e-5)
    assert a.loss == pytest.approx(b.loss, rel=1e-4)
    la, aa = npm.evaluate(a.params, x, y)
    lb, ab = tl.evaluate(b.params, x, y)
    assert la == pytest.approx(lb, rel=1e-4) and aa == pytest.approx(ab)


def test_max_steps_limits_partial_work() -> None:
    x, y = data()
    model = NumpyLogReg(5, 3)
    res = model.train(
        model.init_params(0), x, y, TrainConfig(epochs=5, batch_size=4, max_steps=3), np.random.default_rng(0)
    )
    assert res.steps == 3


def test_logreg_learns_separable_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = NumpyLogReg(2, 2)
    res = model.train(
        model.init_params(0), x, y, TrainConfig(epochs=5, batch_size=10, lr=0.5), np.random.default_rng(0)
    )
    assert model.evaluate(res.params, x, y)[1] > 0.95


def test_labels_beyond_outputs() -> None:
    x, y = data(c=3)
    with pytest.raises(ModelError, match="outputs 2 classes"):
        NumpyLogReg(5, 2).evaluate(NumpyLogReg(5, 2).init_params(0), x, y)
