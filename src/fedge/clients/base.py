"""The client seam: train and evaluate on local data, given global parameters.

A :class:`Learner` knows a model (PyTorch or NumPy) and how to train it on arrays;
a :class:`Client` is a learner bound to one device's data. :func:`run_fit` is the one
client-side path of a round — strategy hooks, local training, the update pipeline —
used alike by every simulation backend and by the gRPC edge client.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedge.core.params import Params, nbytes
from fedge.core.types import ClientContext, ClientUpdate, EvalResult, FitInstructions, TrainConfig

if TYPE_CHECKING:
    from fedge.pipeline import Pipeline
    from fedge.strategies.base import Strategy


@dataclass
class TrainResult:
    params: Params
    steps: int
    loss: float
    num_examples: int


@dataclass
class ClientData:
    """One client's local arrays (often views into shared federation arrays)."""

    x_train: npt.NDArray[np.generic]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.generic] | None = None
    y_test: npt.NDArray[np.int64] | None = None

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        return 0 if self.y_test is None else len(self.y_test)


@runtime_checkable
class Learner(Protocol):
    """A model and its local optimiser, stateless between calls."""

    def init_params(self, seed: int) -> Params: ...

    def train(
        self,
        params: Params,
        x: npt.NDArray[np.generic],
        y: npt.NDArray[np.int64],
        cfg: TrainConfig,
        rng: np.random.Generator,
    ) -> TrainResult: ...

    def evaluate(self, params: Params, x: npt.NDArray[np.generic], y: npt.NDArray[np.int64]) -> tuple[float, float]:
        """Mean loss and accuracy of ``params`` on ``(x, y)``."""
        ...


@runtime_checkable
class Client(Protocol):
    """What a round needs from a client; implement it directly for custom training."""

    client_id: int

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult: ...

    def loss(self, params: Params) -> float: ...

    def evaluate(self, params: Params) -> EvalResult: ...


class LearnerClient:
    """A :class:`Learner` bound to one client's :class:`ClientData`."""

    def __init__(self, client_id: int, learner: Learner, data: ClientData) -> None:
        self.client_id = client_id
        self.learner = learner
        self.data = data

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        return self.learner.train(params, self.data.x_train, self.data.y_train, cfg, ctx.rng)

    def loss(self, params: Params) -> float:
        return self.learner.evaluate(params, self.data.x_train, self.data.y_train)[0]

    def evaluate(self, params: Params) -> EvalResult:
        x, y = self.data.x_test, self.data.y_test
        if x is None or y is None or len(y) == 0:
            x, y = self.data.x_train, self.data.y_train
        loss, acc = self.learner.evaluate(params, x, y)
        return EvalResult(client_id=self.client_id, num_examples=len(y), loss=loss, accuracy=acc)


def overridden(cfg: TrainConfig, ins: FitInstructions, client_id: int) -> TrainConfig:
    """``cfg`` with the round plan's overrides for this client (a straggler's epochs, a step budget)."""
    extra = ins.per_client.get(client_id)
    return cfg if extra is None else replace(cfg, **extra)


def run_fit(
    client: Client,
    params: Params,
    ins: FitInstructions,
    ctx: ClientContext,
    *,
    strategy: Strategy,
    pipeline: Pipeline,
) -> ClientUpdate:
    """One client's part of a round: prepare, train, build the update, run the pipeline.

    The client trains the strategy's :meth:`~fedge.strategies.base.Strategy.client_params`
    of ``params`` (the same model unless the strategy personalises it) and its delta is
    taken against that starting point.
    """
    from fedge.strategies.base import delta_of

    start = strategy.client_params(params, ins, ctx)
    cfg = overridden(strategy.client_prepare(ins, ctx), ins, ctx.client_id)
    metrics: dict[str, float] = {}
    if ins.config.get("report_initial_loss"):
        metrics["initial_loss"] = float(client.loss(start))
    result = strategy.client_train(client, start, cfg, ins=ins, ctx=ctx)
    metrics["train_loss"] = float(result.loss)
    metrics["steps"] = float(result.steps)
    update = ClientUpdate(
        client_id=ctx.client_id,
        delta=delta_of(result.params, start),
        num_examples=result.num_examples,
        metrics=metrics,
    )
    update = strategy.client_finish(
        update,
        global_params=start,
        local_params=result.params,
        ins=ins,
        ctx=ctx,
        steps=result.steps,
    )
    update = pipeline.client(update, ctx)
    if update.uplink_bytes == 0:
        update.uplink_bytes = nbytes(update.delta) + sum(nbytes(v) for v in update.extras.values())
    return update


def batches(n: int, batch_size: int, rng: np.random.Generator) -> list[npt.NDArray[np.intp]]:
    """One epoch's shuffled mini-batch index arrays (the last batch may be smaller)."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def anchor_weights(lr: float, lam: float) -> tuple[float, float]:
    """``(a, b)`` of the proximal map ``w <- a*w + b*anchor`` of ``lam/2 ||w - anchor||^2`` after a step of ``lr``.

    ``a = 1/(1 + lr*lam)``, ``b = lr*lam/(1 + lr*lam)``; ``lam = inf`` gives ``(0, 1)``: ``w = anchor``.
    """
    if lam == float("inf"):
        return 0.0, 1.0
    c = lr * lam
    return 1.0 / (1.0 + c), c / (1.0 + c)


def step_budget(cfg: TrainConfig, n: int) -> tuple[int, int]:
    """``(epochs, max_steps)`` for this config on ``n`` examples."""
    per_epoch = max(1, -(-n // cfg.batch_size))
    total = cfg.epochs * per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    return cfg.epochs, total
