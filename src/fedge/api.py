"""The short path for people who bring their own PyTorch model and per-client arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.clients.base import ClientData, Learner, LearnerClient
from fedge.core.errors import ConfigError, DataError
from fedge.core.threads import apply_threads
from fedge.core.types import TrainConfig
from fedge.engine import Callback, RunResult
from fedge.federation import Federation
from fedge.pipeline import Transform
from fedge.preflight import check_client_features
from fedge.simulation.sampling import Sampling
from fedge.strategies.base import Strategy
from fedge.strategies.fedavg import FedAvg

ArrayPair = tuple[npt.ArrayLike, npt.ArrayLike]


def _backend(name: str) -> Any:
    """The named execution backend, optional ones (vectorized, processes, ray) included."""
    from fedge.federation import make_backend  # imports the part that owns an optional backend

    return make_backend(name)


def _strategy(strategy: Strategy | str | None, kwargs: Mapping[str, Any] | None) -> Strategy:
    """A strategy object, built by name (``"fedprox"``, with ``kwargs``) when a string is given."""
    if strategy is None:
        strategy = "fedavg" if kwargs else FedAvg()
    if isinstance(strategy, Strategy):
        if kwargs:
            raise ConfigError("strategy_kwargs: only with a strategy given by name")
        return strategy
    if not isinstance(strategy, str):
        raise ConfigError(f"strategy: expected a Strategy or a name, got {type(strategy).__name__}")
    from fedge.strategies import build_strategy  # imports the part that owns an optional strategy

    return build_strategy(strategy, **dict(kwargs or {}))


def _check_ranges(*, rounds: int, local_epochs: int, batch_size: int, lr: float, threads: int) -> None:
    """The same limits a config file has, so a typo fails at once instead of training backwards or not at all."""
    for name, value, low in (("rounds", rounds, 1), ("local_epochs", local_epochs, 1), ("batch_size", batch_size, 1)):
        if value < low:
            raise ConfigError(f"{name} = {value} must be >= {low}")
    if threads < 0:
        raise ConfigError(f"threads = {threads} must be >= 0 (0 = auto)")
    if not lr > 0:
        raise ConfigError(f"lr = {lr} must be > 0")


def run(
    model: Any,
    clients: Sequence[ArrayPair],
    *,
    strategy: Strategy | str | None = None,
    strategy_kwargs: Mapping[str, Any] | None = None,
    rounds: int = 10,
    clients_per_round: int | None = None,
    local_epochs: int = 1,
    batch_size: int = 10,
    lr: float = 0.05,
    test: ArrayPair | None = None,
    transforms: Sequence[Transform] = (),
    callbacks: Sequence[Callback] = (),
    backend: str = "auto",
    seed: int = 0,
    threads: int = 0,
) -> RunResult:
    """Federate ``model`` (an ``nn.Module`` or any :class:`Learner`) over ``clients``.

    ``clients`` holds one ``(x, y)`` pair of arrays per client; ``test`` is an optional
    held-out ``(x, y)`` for centralised evaluation. ``strategy`` is a :class:`Strategy` or
    a name from ``fedge strategies`` (its hyperparameters in ``strategy_kwargs``, e.g.
    ``strategy="fedprox", strategy_kwargs={"mu": 0.1}``). ``clients_per_round`` defaults to
    ``min(10, len(clients))``; ``threads`` is ``[training] threads`` (0 = auto, see
    :mod:`fedge.core.threads`). Every client's features are checked against the model
    before the first round. Returns the history and final state (``result.state.params``).
    """
    if not clients:
        raise DataError("no clients given")
    _check_ranges(rounds=rounds, local_epochs=local_epochs, batch_size=batch_size, lr=lr, threads=threads)
    if clients_per_round is None:
        clients_per_round = min(10, len(clients))
    if not 1 <= clients_per_round <= len(clients):
        raise ConfigError(f"clients_per_round = {clients_per_round} must lie in [1, {len(clients)}], the clients given")
    apply_threads(threads, backend)
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
    chosen = _strategy(strategy, strategy_kwargs)
    initial = learner.init_params(seed)
    num_classes = max(int(d.y_train.max()) for d in data) + 1
    check_client_features(learner, initial, [d.x_train for d in data], num_classes)
    evaluator = None
    if test is not None:
        xt, yt = np.asarray(test[0], dtype=np.float32), np.asarray(test[1], dtype=np.int64)

        def evaluator(params: list[np.ndarray]) -> tuple[float, float]:
            return learner.evaluate(params, xt, yt)

    return Federation.of(
        strategy=chosen,
        client_fn=lambda cid: LearnerClient(cid, learner, data[cid]),
        num_clients=len(data),
        initial=initial,
        rounds=rounds,
        sampling=Sampling(count=clients_per_round),
        train=TrainConfig(epochs=local_epochs, batch_size=batch_size, lr=lr),
        transforms=transforms,
        seed=seed,
        backend=_backend(backend),
        evaluator=evaluator,
        callbacks=list(callbacks),
        learner=learner,
    ).run()
