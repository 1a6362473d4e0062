"""The ``auto`` backend's pick on constructed cohorts, and its runs matching the debug backend."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from fedge.clients.base import ClientData, LearnerClient
from fedge.clients.numpy_models import NumpyLogReg
from fedge.clients.torch_learner import TorchLearner
from fedge.core.types import FitInstructions, TrainConfig
from fedge.engine import run
from fedge.simulation.backends import AutoBackend
from fedge.simulation.backends.auto import choose
from fedge.simulation.sampling import Sampling
from fedge.strategies.fedavg import FedAvg
from fedge.strategies.scaffold import Scaffold
from fedge.transport.inprocess import BACKENDS, ClientRuntime, FitTask, InProcessTransport

TRAIN = TrainConfig(epochs=2, batch_size=10, lr=0.05)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))


def _clients(sizes: list[int]) -> list[ClientData]:
    rng = np.random.default_rng(0)
    return [
        ClientData(rng.normal(size=(n, 20)).astype(np.float32), rng.integers(0, 4, size=n).astype(np.int64))
        for n in sizes
    ]


def _task(learner: Any, sizes: list[int], strategy: Any = None) -> FitTask:
    clients = _clients(sizes)
    strategy = strategy or FedAvg()
    runtime = ClientRuntime(lambda cid: LearnerClient(cid, learner, clients[cid]), strategy, _pipeline(), seed=1)
    params = learner.init_params(0)
    ins = FitInstructions(round_num=1, train=TRAIN)
    return FitTask(runtime, 1, list(range(len(sizes))), params, ins, {})


def _pipeline() -> Any:
    from fedge.pipeline import Pipeline

    return Pipeline()


def test_a_tiny_numpy_model_runs_sequentially() -> None:
    name, why = choose(_task(NumpyLogReg(20, 4), [50] * 20), cores=2)
    assert name == "sequential" and "not a PyTorch model" in why


def test_a_torch_mlp_with_a_uniform_cohort_is_vectorized() -> None:
    for cores in (1, 2):
        name, why = choose(_task(TorchLearner(_mlp), [50] * 20), cores=cores)
        assert name == "vectorized" and "100% of their steps" in why


def test_a_very_ragged_cohort_is_not_vectorized() -> None:
    """Lognormal sizes with sigma 2: almost every client has a schedule of its own length."""
    sizes = [int(s) for s in np.clip(np.random.default_rng(3).lognormal(4, 2, size=12), 5, 20000)]
    task = _task(TorchLearner(_mlp), sizes)
    assert choose(task, cores=2)[0] == "processes"
    name, why = choose(task, cores=1)
    assert name == "sequential" and "too ragged" in why


def test_one_client_runs_sequentially() -> None:
    name, why = choose(_task(TorchLearner(_mlp), [50]), cores=4)
    assert name == "sequential" and "1 client" in why


def test_a_model_with_buffers_goes_to_workers_when_there_are_cores() -> None:
    def bn() -> nn.Module:
        return nn.Sequential(nn.Linear(20, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))

    task = _task(TorchLearner(bn), [50] * 8)
    assert choose(task, cores=2)[0] == "processes"
    name, why = choose(task, cores=1)
    assert name == "sequential" and "buffers" in why


@pytest.mark.parametrize("make", [FedAvg, Scaffold])
def test_auto_matches_debug_and_says_what_it_picked(make: Any) -> None:
    """The cohort (uniform sizes) is vectorized; the model is the debug backend's to 1e-5."""
    clients = _clients([40] * 10)

    def go(backend: Any) -> list[np.ndarray]:
        learner = TorchLearner(_mlp)
        torch.manual_seed(0)
        strategy = make()
        transport = InProcessTransport(
            lambda cid: LearnerClient(cid, learner, clients[cid]), 10, strategy=strategy, seed=5, backend=backend
        )
        try:
            result = run(
                strategy=strategy,
                transport=transport,
                initial_params=learner.init_params(0),
                rounds=2,
                sampling=Sampling(count=8),
                seed=5,
                train=TRAIN,
            )
        finally:
            transport.close()
        return result.state.params

    auto = AutoBackend(cores=1)
    got = go(auto)
    assert auto.choice is not None and auto.choice[0] == "vectorized"
    for a, b in zip(got, go(BACKENDS["debug"]()), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_auto_by_name_puts_its_pick_in_every_record() -> None:
    from fedge.config.schema import from_dict
    from fedge.federation import build, execute

    picks = {}
    for framework in ("torch", "numpy"):
        exp = from_dict(
            {
                "rounds": 2,
                "data": {"num_clients": 12, "partition": "iid"},
                "model": {"name": "logreg", "framework": framework},
                "training": {"backend": "auto", "clients_per_round": 10, "local_epochs": 1},
            }
        )
        history = execute(build(exp)).history
        assert len(history) == 2 and all(r.extra["backend_reason"] for r in history)
        picks[framework] = {r.extra["backend"] for r in history}
    assert picks == {"torch": {"sequential"}, "numpy": {"sequential"}}


def _builtin_mlp() -> Any:
    from fedge.models import build_learner

    learner = build_learner("mlp", "torch", (20,), 4, (16,))
    assert isinstance(learner, TorchLearner) and learner.kernel is not None
    return learner


def test_a_builtin_model_runs_its_kernel_client_by_client_unless_schedules_are_very_short() -> None:
    """The dense kernel's step is cheap; batching pays only where a client does a step or two."""
    name, why = choose(_task(_builtin_mlp(), [50] * 20), cores=2)  # 2 epochs of 5 batches
    assert name == "sequential" and "dense kernel, 10.0 steps" in why
    name, why = choose(_task(_builtin_mlp(), [10] * 20), cores=2)  # 2 epochs of 1 batch
    assert name == "vectorized" and "2.0 steps" in why
    task = _task(_builtin_mlp(), [10] * 20)
    task.ins.train = TrainConfig(epochs=2, batch_size=10, lr=0.05, momentum=0.9)
    name, why = choose(task, cores=2)  # not batchable, and not worth a worker: the kernel it is
    assert name == "sequential" and "dense kernel, 2.0 steps" in why


class _LoggingClient(LearnerClient):
    """A user's client with a side effect in the caller's process."""

    seen: ClassVar[list[int]] = []

    def train(self, params: Any, cfg: TrainConfig, ctx: Any) -> Any:
        self.seen.append(self.client_id)
        return super().train(params, cfg, ctx)


def test_a_custom_client_is_never_moved_into_worker_processes() -> None:
    def bn() -> nn.Module:
        return nn.Sequential(nn.Linear(20, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))

    learner = TorchLearner(bn)
    task = _task(learner, [50] * 8)
    assert choose(task, cores=2)[0] == "processes"
    clients = _clients([50] * 8)
    runtime = ClientRuntime(lambda cid: _LoggingClient(cid, learner, clients[cid]), FedAvg(), _pipeline(), seed=1)
    custom = FitTask(runtime, 1, task.client_ids, task.params, task.ins, {})
    name, why = choose(custom, cores=2)
    assert name == "sequential" and "_LoggingClient is a custom client" in why
    uniform = FitTask(
        ClientRuntime(lambda cid: _LoggingClient(cid, TorchLearner(_mlp), clients[cid]), FedAvg(), _pipeline(), seed=1),
        1,
        task.client_ids,
        TorchLearner(_mlp).init_params(0),
        task.ins,
        {},
    )
    assert choose(uniform, cores=2)[0] == "sequential"  # batching would skip its own train()


def test_a_custom_client_with_personal_models_stays_in_this_process() -> None:
    from fedge.strategies.fedper import FedPer

    clients = _clients([50] * 8)
    learner = NumpyLogReg(20, 4)
    strategy = FedPer(head_tensors=1)
    own = ClientRuntime(lambda cid: LearnerClient(cid, learner, clients[cid]), strategy, _pipeline(), seed=1)
    mine = ClientRuntime(lambda cid: _LoggingClient(cid, learner, clients[cid]), strategy, _pipeline(), seed=1)
    params = learner.init_params(0)
    ins = FitInstructions(round_num=1, train=TRAIN)
    assert choose(FitTask(own, 1, list(range(8)), params, ins, {}), cores=2)[0] == "processes"
    name, why = choose(FitTask(mine, 1, list(range(8)), params, ins, {}), cores=2)
    assert name == "sequential" and "custom client" in why


def test_the_vectorized_backend_runs_a_custom_client_that_shares_a_plain_ones_learner_itself() -> None:
    """Plain and custom clients of one learner in one round: the plain ones are batched, and each
    custom one still runs its own train() (the backend's check is remembered per learner and type)."""
    from fedge.simulation.backends.vectorized import VectorizedBackend

    learner = TorchLearner(_mlp)
    clients = _clients([50] * 12)
    _LoggingClient.seen = []

    def make(cid: int) -> LearnerClient:
        kind = _LoggingClient if cid % 3 == 2 else LearnerClient
        return kind(cid, learner, clients[cid])

    runtime = ClientRuntime(make, FedAvg(), _pipeline(), seed=1)
    ins = FitInstructions(round_num=1, train=TRAIN)
    task = FitTask(runtime, 1, list(range(12)), learner.init_params(0), ins, {})
    backend = VectorizedBackend()
    got = list(backend.fit(task))
    assert sorted(_LoggingClient.seen) == [2, 5, 8, 11]
    assert backend.round_info["batched_clients"] == 8
    assert sorted(u.client_id for u in got) == list(range(12))
