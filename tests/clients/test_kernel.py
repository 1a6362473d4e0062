"""The dense NumPy kernel trains the built-in logreg and MLP exactly as ``TorchLearner`` trains the module."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.clients.base import ClientData, Learner, LearnerClient
from fedge.clients.kernel import DenseKernel
from fedge.clients.torch_learner import TorchLearner
from fedge.compression.codecs import RandK
from fedge.compression.transforms import Compress
from fedge.core.errors import ModelError
from fedge.core.params import Params
from fedge.core.types import TrainConfig
from fedge.engine import run
from fedge.models import build_learner
from fedge.pipeline import Pipeline
from fedge.privacy.transforms import CentralDP
from fedge.simulation.sampling import Sampling
from fedge.strategies.fedavg import FedAvg
from fedge.strategies.fedprox import FedProx
from fedge.strategies.scaffold import STATE_KEY, Scaffold
from fedge.transport.inprocess import BACKENDS, InProcessTransport


def data(n: int = 29, d: int = 12, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, c, n).astype(np.int64)


def pair(name: str, hidden: tuple[int, ...] = (8,), width: float = 1.0) -> tuple[TorchLearner, TorchLearner]:
    """The built-in learner (with its kernel) and the same module trained by torch alone."""
    fast = build_learner(name, "torch", (12,), 4, hidden, width=width)
    assert isinstance(fast, TorchLearner) and fast.kernel is not None
    assert fast.module_fn is not None
    return fast, TorchLearner(fast.module_fn)


def close(a: Params, b: Params, atol: float = 1e-5) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and x.dtype == np.float32
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    model=st.sampled_from([("logreg", (), 1.0), ("mlp", (8,), 1.0), ("mlp", (8, 5), 1.0), ("mlp", (8, 6), 0.5)]),
    momentum=st.sampled_from([0.0, 0.9]),
    wd=st.sampled_from([0.0, 0.01]),
    mu=st.sampled_from([0.0, 0.3]),
    correction=st.booleans(),
    anchor=st.booleans(),
    frozen=st.sampled_from([(), (0,), (1,)]),
    batch=st.sampled_from([1, 4, 7, 64]),
    max_steps=st.sampled_from([None, 5]),
    seed=st.integers(0, 50),
)
def test_kernel_trains_like_the_torch_module(
    model: tuple[str, tuple[int, ...], float],
    momentum: float,
    wd: float,
    mu: float,
    correction: bool,
    anchor: bool,
    frozen: tuple[int, ...],
    batch: int,
    max_steps: int | None,
    seed: int,
) -> None:
    name, hidden, width = model
    fast, slow = pair(name, hidden, width)
    x, y = data(seed=seed)
    params = fast.init_params(seed)
    cfg = TrainConfig(
        epochs=3,
        batch_size=batch,
        # the same effective step with momentum: at lr 0.1 and momentum 0.9 one-example batches make the
        # weights grow until float32 rounding (NumPy's products against torch's) is amplified past 1e-5
        lr=0.1 * (1 - momentum),
        momentum=momentum,
        weight_decay=wd,
        prox_mu=mu,
        grad_correction=[np.full(p.shape, 0.02, np.float32) for p in params] if correction else None,
        anchor=[p * 0.5 for p in params] if anchor else None,
        anchor_lambda=0.4,
        frozen=frozen or None,
        max_steps=max_steps,
    )
    a = fast.train(params, x, y, cfg, np.random.default_rng(seed))
    b = slow.train(params, x, y, cfg, np.random.default_rng(seed))
    assert a.steps == b.steps
    assert a.num_examples == b.num_examples == len(y)
    close(a.params, b.params)
    assert a.loss == pytest.approx(b.loss, rel=1e-5, abs=1e-6)
    for i in frozen:
        np.testing.assert_array_equal(a.params[i], params[i])
    la, aa = fast.evaluate(a.params, x, y)
    lb, ab = slow.evaluate(a.params, x, y)
    assert la == pytest.approx(lb, rel=1e-5) and aa == pytest.approx(ab)


def test_images_are_flattened_like_the_module() -> None:
    fast = build_learner("mlp", "torch", (3, 4), 4, (6,))
    assert isinstance(fast, TorchLearner) and fast.module_fn is not None
    slow = TorchLearner(fast.module_fn)
    x, y = data(d=12)
    images = x.reshape(-1, 3, 4)
    params = fast.init_params(2)
    cfg = TrainConfig(epochs=2, batch_size=5, lr=0.2)
    close(
        fast.train(params, images, y, cfg, np.random.default_rng(1)).params,
        slow.train(params, images, y, cfg, np.random.default_rng(1)).params,
    )


def test_only_the_builtin_dense_models_with_cross_entropy_get_the_kernel() -> None:
    assert getattr(build_learner("cnn", "torch", (8, 8), 10), "kernel", None) is None
    with_loss = build_learner("mlp", "torch", (12,), 4, loss="tests.clients.test_kernel:a_loss")
    assert isinstance(with_loss, TorchLearner) and with_loss.kernel is None
    with pytest.raises(ModelError, match="cross-entropy"):
        TorchLearner(lambda: None, loss="x:y", kernel=DenseKernel([3, 2]))  # type: ignore[arg-type,return-value]


def a_loss(logits: Any, targets: Any) -> Any:
    import torch

    return torch.nn.functional.cross_entropy(logits, targets)


def test_bad_shapes_and_labels_are_one_line_model_errors() -> None:
    fast, _ = pair("mlp")
    params = fast.init_params(0)
    x, y = data()
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.1)
    with pytest.raises(ModelError, match="labels go up to 7"):
        fast.train(params, x, np.full(len(x), 7), cfg, np.random.default_rng(0))
    with pytest.raises(ModelError, match="12 input features"):
        fast.train(params, x[:, :5], y, cfg, np.random.default_rng(0))
    with pytest.raises(ModelError, match="parameter tensors"):
        fast.train(params[:2], x, y, cfg, np.random.default_rng(0))
    with pytest.raises(ModelError, match="labels go up to 9"):
        fast.evaluate(params, x, np.full(len(x), 9))


def test_an_empty_client_takes_no_step() -> None:
    fast, slow = pair("mlp")
    params = fast.init_params(0)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.1)
    x = np.zeros((0, 12), np.float32)
    y = np.zeros(0, np.int64)
    got = fast.train(params, x, y, cfg, np.random.default_rng(0))
    assert got.steps == slow.train(params, x, y, cfg, np.random.default_rng(0)).steps == 0
    close(got.params, params, atol=0)


STRATEGIES = {"fedavg": FedAvg, "fedprox": lambda: FedProx(mu=0.5), "scaffold": Scaffold}


def federate(learner: Learner, strategy: str) -> tuple[Params, dict[int, dict[str, Any]]]:
    """Three rounds of 8 of 10 ragged clients on ``debug``, with a codec (and clipping, where it applies).

    The codec is random-k sparsification, which passes the kept values through unrounded.
    A rounding codec (int8, fp16) moves a value by a whole step of its grid when two float32
    runs differ by one ulp right at a rounding boundary; NumPy's and torch's matmuls differ
    by such ulps, so a rounding codec would test where its boundaries fall, not the kernel.
    """
    x, y = data(n=200, seed=4)
    sizes = 3 + (np.arange(10) * 7) % 17
    clients = [ClientData(x[20 * k : 20 * k + s], y[20 * k : 20 * k + s]) for k, s in enumerate(sizes)]
    codec = Compress(RandK(k=0.5, rescale=True))
    pipeline = (
        Pipeline([codec])
        if strategy == "scaffold"
        else Pipeline([CentralDP(clip_norm=0.5, noise_multiplier=0.1, expected_clients=8, clip_at="client"), codec])
    )
    made = STRATEGIES[strategy]()
    transport = InProcessTransport(
        lambda cid: LearnerClient(cid, learner, clients[cid]),
        len(clients),
        strategy=made,
        pipeline=pipeline,
        seed=7,
        backend=BACKENDS["debug"](),
    )
    try:
        result = run(
            strategy=made,
            transport=transport,
            initial_params=learner.init_params(0),
            rounds=3,
            sampling=Sampling(count=8),
            seed=7,
            pipeline=pipeline,
            train=TrainConfig(epochs=2, batch_size=4, lr=0.1),
        )
    finally:
        transport.close()
    return result.state.params, transport.states


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_federation_on_the_kernel_gives_the_torch_modules_global_model(strategy: str) -> None:
    fast, slow = pair("mlp", (8,))
    got, got_states = federate(fast, strategy)
    want, want_states = federate(slow, strategy)
    close(got, want)
    assert not np.allclose(got[0], fast.init_params(0)[0])
    if strategy == "scaffold":
        assert {c for c, s in want_states.items() if STATE_KEY in s} == {
            c for c, s in got_states.items() if STATE_KEY in s
        }
        for cid, state in want_states.items():
            if STATE_KEY in state:
                close(got_states[cid][STATE_KEY], state[STATE_KEY])


def test_a_diverging_client_trains_on_silently_to_non_finite_weights_as_torch_does() -> None:
    import warnings

    fast, _ = pair("mlp")
    params = fast.init_params(0)
    x, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fast.train(params, x * 1e20, y, TrainConfig(epochs=3, batch_size=4, lr=1e30), np.random.default_rng(0))
        loss, _ = fast.evaluate(got.params, x, y)
    assert not all(np.isfinite(p).all() for p in got.params)
    assert not np.isfinite(loss)
