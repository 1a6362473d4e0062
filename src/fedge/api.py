"""The short path for people who bring their own PyTorch model and per-client arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.clients.base import ClientData, Learner, LearnerClient
from fedge.core.errors import DataError
from fedge.core.types import TrainConfig
from fedge.pipeline import Pipeline, Transform
from fedge.simulation.loop import Callback, EvalPlan, RunResult
from fedge.simulation.loop import run as run_rounds
from fedge.simulation.sampling import Sampling
from fedge.strategies.base import Strategy
from fedge.strategies.fedavg import FedAvg
from fedge.transport.inprocess import BACKENDS, InProcessTransport

ArrayPair = tuple[npt.ArrayLike, npt.ArrayLike]


def _backend(name: str) -> Any:
    """The named execution backend, optional ones (vectorized, processes, ray) included."""
    if name not in BACKENDS:
        from fedge.plugins import load_plugins

        load_plugins()
    from fedge.experiment import make_backend

    return make_backend(name)


def run(
    model: Any,
    clients: Sequence[ArrayPair],
    *,
    strategy: Strategy | None = None,
    rounds: int = 10,
    clients_per_round: int = 10,
    local_epochs: int = 1,
    batch_size: int = 10,
    lr: float = 0.05,
    test: ArrayPair | None = None,
    transforms: Sequence[Transform] = (),
    callbacks: Sequence[Callback] = (),
    backend: str = "sequential",
    seed: int = 0,
) -> RunResult:
    """Federate ``model`` (an ``nn.Module`` or any :class:`Learner`) over ``clients``.

    ``clients`` holds one ``(x, y)`` pair of arrays per client; ``test`` is an optional
    held-out ``(x, y)`` for centralised evaluation. Returns the history and final state
    (``result.state.params``).
    """
    if not clients:
        raise DataError("no clients given")
    learner: Learner
    if isinstance(model, Learner):
        learner = model
    else:
        from fedge.clients.torch_learner import TorchLearner

        learner = TorchLearner(model)
    data = []
    for k, (x, y) in enumerate(clients):
        xa, ya = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
        if len(xa) != len(ya) or len(ya) == 0:
            raise DataError(f"client {k}: {len(xa)} feature rows and {len(ya)} labels")
        data.append(ClientData(xa, ya))
    strategy = strategy or FedAvg()
    pipeline = Pipeline(transforms)
    transport = InProcessTransport(
        lambda cid: LearnerClient(cid, learner, data[cid]),
        len(data),
        strategy=strategy,
        pipeline=pipeline,
        seed=seed,
        backend=_backend(backend),
    )
    evaluator = None
    if test is not None:
        xt, yt = np.asarray(test[0], dtype=np.float32), np.asarray(test[1], dtype=np.int64)

        def evaluator(params: list[np.ndarray]) -> tuple[float, float]:
            return learner.evaluate(params, xt, yt)

    try:
        return run_rounds(
            strategy=strategy,
            transport=transport,
            initial_params=learner.init_params(seed),
            rounds=rounds,
            sampling=Sampling(count=min(clients_per_round, len(data))),
            train=TrainConfig(epochs=local_epochs, batch_size=batch_size, lr=lr),
            pipeline=pipeline,
            evaluator=evaluator,
            eval_plan=EvalPlan(),
            seed=seed,
            callbacks=callbacks,
        )
    finally:
        transport.close()
