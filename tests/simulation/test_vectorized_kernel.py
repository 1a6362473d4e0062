"""The vectorized backend on the built-in dense models (their NumPy kernel, batched over clients)
gives the debug backend's model, records and rejections."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedge.clients.base import ClientData, LearnerClient
from fedge.clients.torch_learner import TorchLearner
from fedge.compression.codecs import Int8
from fedge.compression.transforms import Compress
from fedge.core.params import Params
from fedge.core.types import TrainConfig, client_rng
from fedge.data.w2 import w2
from fedge.engine import run
from fedge.models import build_learner
from fedge.pipeline import Pipeline
from fedge.simulation.backends import VectorizedBackend
from fedge.simulation.backends import vectorized as vec
from fedge.simulation.history import History
from fedge.simulation.sampling import Sampling
from fedge.strategies.base import Strategy
from fedge.strategies.fedavg import FedAvg
from fedge.strategies.fedprox import FedProx
from fedge.strategies.scaffold import Scaffold
from fedge.transport.inprocess import BACKENDS, Backend, InProcessTransport

STRATEGIES = {"fedavg": FedAvg, "fedprox": lambda: FedProx(mu=0.5), "scaffold": Scaffold}


def _learner() -> TorchLearner:
    learner = build_learner("mlp", "torch", (60,), 10, (16,))
    assert isinstance(learner, TorchLearner) and learner.kernel is not None
    return learner


def _clients(sizes: list[int]) -> list[ClientData]:
    data = w2(len(sizes), samples_per_client=max(sizes), test_size=0, seed=3)
    m = max(sizes)
    return [ClientData(data.x[k * m : k * m + s], data.y[k * m : k * m + s]) for k, s in enumerate(sizes)]


EQUAL = [12] * 40
"""Clients of one size: their batch orders are drawn for the whole cohort at once."""
RAGGED = [3 + (k * 7) % 29 for k in range(40)]


def _run(
    backend: Backend,
    strategy: Strategy,
    sizes: list[int],
    *,
    pipeline: Pipeline | None = None,
    max_update_norm: float | None = None,
    train: TrainConfig | None = None,
) -> tuple[Params, History, InProcessTransport]:
    learner, clients = _learner(), _clients(sizes)
    initial = learner.init_params(0)
    transport = InProcessTransport(
        lambda cid: LearnerClient(cid, learner, clients[cid]),
        len(clients),
        strategy=strategy,
        pipeline=pipeline,
        seed=7,
        backend=backend,
    )
    try:
        result = run(
            strategy=strategy,
            transport=transport,
            pipeline=pipeline,
            initial_params=initial,
            rounds=3,
            sampling=Sampling(count=30),
            seed=7,
            train=train or TrainConfig(epochs=2, batch_size=5, lr=0.1),
            max_update_norm=max_update_norm,
        )
    finally:
        transport.close()
    return result.state.params, result.history, transport


def _close(a: Params, b: Params) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def _same_records(got: History, want: History) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.participants == w.participants
        assert {k: sorted(v) for k, v in g.dropped.items()} == {k: sorted(v) for k, v in w.dropped.items()}
        assert g.uplink_bytes == w.uplink_bytes
        assert g.train_loss == pytest.approx(w.train_loss, abs=1e-5, nan_ok=True)


@pytest.mark.parametrize("sizes", [EQUAL, RAGGED], ids=["equal", "ragged"])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_kernel_cohorts_match_debug(strategy: str, sizes: list[int]) -> None:
    want, want_history, _ = _run(BACKENDS["debug"](), STRATEGIES[strategy](), sizes)
    backend = VectorizedBackend(min_batch=1)
    got, history, _ = _run(backend, STRATEGIES[strategy](), sizes)
    _close(got, want)
    _same_records(history, want_history)
    assert backend.round_info["batched_clients"] > 0


def test_a_pipeline_keeps_the_per_client_path_and_still_matches() -> None:
    pipeline = Pipeline([Compress(Int8())])
    want, _, _ = _run(BACKENDS["debug"](), FedAvg(), EQUAL, pipeline=Pipeline([Compress(Int8())]))
    got, _, _ = _run(VectorizedBackend(min_batch=1), FedAvg(), EQUAL, pipeline=pipeline)
    _close(got, want)


def test_an_update_over_the_norm_bound_is_rejected_as_on_debug() -> None:
    """The batched check rejects the same clients, with the validator's own reason."""
    train = TrainConfig(epochs=2, batch_size=5, lr=0.5)
    want, want_history, _ = _run(BACKENDS["debug"](), FedAvg(), EQUAL, max_update_norm=1.5, train=train)
    got, history, _ = _run(VectorizedBackend(min_batch=1), FedAvg(), EQUAL, max_update_norm=1.5, train=train)
    rejected = sum(r.failed for r in want_history)
    assert 0 < rejected < 90
    assert all(reason.startswith("rejected: update from client") for r in history for reason in r.dropped)
    _close(got, want)
    _same_records(history, want_history)


def test_the_drawn_orders_are_those_the_clients_generators_give(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs cut from batched draws train on the batches ``plan_batches`` gives, and a context's
    generator, if asked for, is where the client's own would be after drawing them."""
    made: list[Any] = []
    real = vec.streamed_jobs

    def spy(*args: Any, **kwargs: Any) -> list[Any]:
        jobs = real(*args, **kwargs)
        made.extend(jobs)
        return jobs

    summed: list[int] = []
    real_sum = vec.sum_bucket

    def spy_sum(*args: Any, **kwargs: Any) -> Any:
        summed.append(len(args[4]))
        return real_sum(*args, **kwargs)

    monkeypatch.setattr(vec, "streamed_jobs", spy)
    monkeypatch.setattr(vec, "sum_bucket", spy_sum)
    _run(VectorizedBackend(min_batch=1), FedAvg(), EQUAL)
    assert len(made) == 90
    assert sum(summed) == 90, "every bucket was summed as arrays"
    for job in made[:30]:
        g = client_rng(7, job.ctx.round_num, job.client.client_id)
        want = vec.plan_batches(job.client.data.num_train, job.cfg, g)
        assert [b.tolist() for b in job.batches] == [b.tolist() for b in want]
        assert job.ctx.rng.bit_generator.state == g.bit_generator.state
