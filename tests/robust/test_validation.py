"""Lying updates (NaN/Inf, wrong shapes, norms beyond the hard bound) are rejected on the
in-process path, with the client and the reason in the history, on both the streaming
and the individual-updates path."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.clients.base import TrainResult
from fedge.core.params import Params
from fedge.core.types import ClientContext, ClientUpdate, EvalResult, TrainConfig
from fedge.engine import run
from fedge.pipeline import Pipeline, Transform
from fedge.robust import Median
from fedge.simulation.sampling import Sampling
from fedge.strategies import FedAvg
from fedge.strategies.base import Strategy
from fedge.transport.inprocess import InProcessTransport, SequentialBackend


class WrongShape(Transform):
    """What a tampered client 1 puts on the wire: a delta of the wrong shape."""

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        if update.client_id == 1:
            update.delta = [np.zeros(7, dtype=np.float32)]
        return update


class Liar:
    """Client 0 sends NaN, 1 a wrong shape, 2 a huge update, 3 Inf; the rest a small honest step."""

    def __init__(self, cid: int) -> None:
        self.client_id = cid

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        out = [p + np.float32(0.1) for p in params]
        if self.client_id == 0:
            out[0] = out[0].copy()
            out[0][0] = np.nan
        elif self.client_id == 2:
            out = [p + np.float32(1e3) for p in params]
        elif self.client_id == 3:
            out = [np.full_like(p, np.inf) for p in params]
        return TrainResult(params=out, steps=1, loss=0.0, num_examples=5)

    def loss(self, params: Params) -> float:
        return 0.0

    def evaluate(self, params: Params) -> EvalResult:
        return EvalResult(self.client_id, 1, 0.0, 1.0)


@pytest.mark.parametrize("strategy", [FedAvg(weighting="uniform"), Median()])
def test_bad_updates_are_rejected_with_client_and_reason(strategy: Strategy) -> None:
    initial = [np.zeros(4, dtype=np.float32)]
    pipeline = Pipeline([WrongShape()])
    transport = InProcessTransport(Liar, 8, strategy=strategy, pipeline=pipeline, backend=SequentialBackend())
    result = run(
        strategy=strategy,
        transport=transport,
        initial_params=initial,
        rounds=1,
        sampling=Sampling(count=8),
        pipeline=pipeline,
        max_update_norm=10.0,
    )
    rec = result.history.rounds[0]
    reasons = {cid: reason for reason, ids in rec.dropped.items() for cid in ids}
    assert set(reasons) == {0, 1, 2, 3}
    assert all(r.startswith("rejected: ") for r in reasons.values())
    assert "NaN or Inf" in reasons[0] and "NaN or Inf" in reasons[3]
    assert "shape (7,), expected (4,)" in reasons[1]
    assert "norm 2000 > bound 10" in reasons[2]
    assert rec.participants == 4
    np.testing.assert_allclose(result.state.params[0], np.full(4, 0.1), rtol=1e-6)
