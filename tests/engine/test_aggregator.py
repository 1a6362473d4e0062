"""The aggregator: what it rejects and why, partial sums equal to per-update sums, the influence bound."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.clients.base import TrainResult
from fedge.core.errors import ValidationError
from fedge.core.params import Params, ParamSpec
from fedge.core.types import ClientContext, ClientUpdate, EvalResult, FitInstructions, TrainConfig
from fedge.engine import Aggregator, PartialSum, run
from fedge.pipeline import Pipeline, RoundContext, Transform
from fedge.simulation.backends import ProcessesBackend
from fedge.simulation.backends._shard import run_task, split_round
from fedge.simulation.sampling import Sampling
from fedge.strategies import FedAvg
from fedge.strategies.aggregate import Accumulator
from fedge.strategies.influence import InfluenceBound, InfluenceLimits
from fedge.transport.inprocess import Backend, ClientRuntime, FitTask, InProcessTransport, SequentialBackend

SHAPE = [np.zeros(4, dtype=np.float32), np.zeros((2, 3), dtype=np.float32)]


class Step:
    """A client whose local model moves every weight by ``0.1 * (id + 1)``, on ``10 + id`` examples."""

    def __init__(self, cid: int) -> None:
        self.client_id = cid

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        step = np.float32(0.1 * (self.client_id + 1))
        return TrainResult(params=[p + step for p in params], steps=1, loss=0.5, num_examples=10 + self.client_id)

    def loss(self, params: Params) -> float:
        return 0.0

    def evaluate(self, params: Params) -> EvalResult:
        return EvalResult(self.client_id, 1, 0.0, 1.0)


class Tamper(Transform):
    """What tampered clients put on the wire: 0 a wrong shape, 1 NaN, 2 Inf, 3 a huge norm, 4 negative examples."""

    name = "tamper"

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        cid = update.client_id
        if cid == 0:
            update.delta = [np.zeros(7, dtype=np.float32), update.delta[1]]
        elif cid == 1:
            update.delta[0] = update.delta[0].copy()
            update.delta[0][2] = np.nan
        elif cid == 2:
            update.delta[1] = np.full_like(update.delta[1], np.inf)
        elif cid == 3:
            update.delta = [d * np.float32(1e4) for d in update.delta]
        elif cid == 4:
            update.num_examples = -3
        return update


@pytest.mark.parametrize("backend", [SequentialBackend, lambda: ProcessesBackend(workers=2)])
def test_each_bad_update_is_rejected_with_its_reason_in_the_round(backend: type[Backend]) -> None:
    strategy = FedAvg()
    pipeline = Pipeline([Tamper()])
    transport = InProcessTransport(Step, 8, strategy=strategy, pipeline=pipeline, backend=backend())
    try:
        result = run(
            strategy=strategy,
            transport=transport,
            initial_params=SHAPE,
            rounds=1,
            sampling=Sampling(count=8),
            pipeline=pipeline,
            max_update_norm=50.0,
        )
    finally:
        transport.close()
    rec = result.history.rounds[0]
    reasons = {cid: reason for reason, ids in rec.dropped.items() for cid in ids}
    assert set(reasons) == {0, 1, 2, 3, 4}
    assert all(r.startswith("rejected: ") for r in reasons.values())
    assert "shape (7,), expected (4,)" in reasons[0]
    assert "NaN or Inf" in reasons[1] and "NaN or Inf" in reasons[2]
    assert "> bound 50" in reasons[3]
    assert "client 4 reports -3 examples" in reasons[4]
    assert rec.participants == 3 and rec.failed == 5
    honest = {5: 0.6, 6: 0.7, 7: 0.8}
    weights = {cid: 10.0 + cid for cid in honest}
    mean = sum(honest[c] * weights[c] for c in honest) / sum(weights.values())
    np.testing.assert_allclose(result.state.params[0], np.full(4, mean), rtol=1e-5)


def rctx(round_num: int = 1) -> RoundContext:
    return RoundContext(round_num=round_num, rng=np.random.default_rng(0), spec=ParamSpec.of(SHAPE), num_sampled=6)


def test_a_partial_sum_from_a_worker_equals_the_sum_of_its_updates() -> None:
    strategy = FedAvg()
    pipeline = Pipeline()
    aggregator = Aggregator.for_run(strategy, pipeline, ParamSpec.of(SHAPE))
    runtime = ClientRuntime(Step, strategy, pipeline, seed=0)
    ids = [0, 1, 2, 3, 4, 5]
    ins = FitInstructions(round_num=1, train=TrainConfig())

    each = Accumulator()
    for item in SequentialBackend().fit(FitTask(runtime, 1, ids, SHAPE, ins, {}, None)):
        assert isinstance(item, ClientUpdate)
        each.add(aggregator.reducer(rctx(), len(ids))(item))

    task = FitTask(runtime, 1, ids, SHAPE, ins, {}, aggregator.reducer(rctx(), len(ids)))
    parts = [run_task(runtime, share).result for share in split_round(task, 2)]
    assert all(isinstance(p, PartialSum) for p in parts) and len(parts) == 2
    summed = Accumulator()
    for p in parts:
        assert p is not None
        summed.add(p.terms, count=len(p.client_ids))
    assert sorted(c for p in parts if p is not None for c in p.client_ids) == ids
    assert summed.count == each.count == len(ids)
    assert set(summed.sums) == set(each.sums) == {"delta", "weight"}
    for key in each.sums:
        for a, b in zip(summed.sums[key], each.sums[key], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def update(cid: int, scale: float, n: int) -> ClientUpdate:
    return ClientUpdate(cid, [np.full_like(p, scale) for p in SHAPE], n)


def test_the_influence_bound_is_applied_through_the_aggregator() -> None:
    bound = InfluenceBound(InfluenceLimits(examples_factor=2.0, norm_factor=3.0, min_reference=3))
    aggregator = Aggregator.for_run(FedAvg(), Pipeline(), ParamSpec.of(SHAPE), bound=bound)
    first = rctx(1)
    reducer = aggregator.reducer(first, 4)
    for cid in range(3):
        reducer(update(cid, 0.1, 10))
    assert bound.size == 4 and len(bound.latest) == 3

    second = rctx(2)
    reducer = aggregator.reducer(second, 4)
    assert bound.fixed is not None
    terms = reducer(update(9, 100.0, 10**9))
    honest_norm = float(np.sqrt(10 * 0.1**2))
    weight = float(terms["weight"][0][0])
    assert weight == 20.0
    delta_norm = float(np.sqrt(sum(np.sum(d**2) for d in terms["delta"]))) / weight
    assert delta_norm == pytest.approx(3.0 * honest_norm, rel=1e-5)
    assert second.info["influence_capped_updates"] == 1 and second.info["influence_clipped_updates"] == 1


def test_the_validator_is_the_aggregators_first_check() -> None:
    aggregator = Aggregator.for_run(FedAvg(), Pipeline(), ParamSpec.of(SHAPE), max_update_norm=1.0)
    reducer = aggregator.reducer(rctx(), 1)
    with pytest.raises(ValidationError, match=r"norm .* > bound 1"):
        reducer(update(0, 5.0, 10))
    assert aggregator.validator.max_norm == 1.0
