"""Relays: κ1 = 1 is the flat round exactly, relay sums compose into the flat sum, κ1 = 2 is
HierFAVG's average of edge models by hand, and a relay sends the cloud only sums."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.clients.base import TrainResult
from fedge.config.schema import from_dict
from fedge.core.params import Params, ParamSpec
from fedge.core.types import ClientContext, EvalResult, FitInstructions, TrainConfig
from fedge.engine import Aggregator, ClientFailure, PartialSum
from fedge.federation import build, execute
from fedge.hierarchy import HierarchyBackend, Topology
from fedge.pipeline import Pipeline, RoundContext
from fedge.strategies import FedAvg
from fedge.strategies.aggregate import Accumulator
from fedge.transport.inprocess import ClientRuntime, FitTask, SequentialBackend

INIT = [np.array([1.0, -2.0, 4.0], dtype=np.float32)]


class Affine:
    """Trains to ``0.5 * params + t`` with ``t = id + 1`` on ``10 * (id + 1)`` examples; client 5 fails."""

    def __init__(self, cid: int) -> None:
        self.client_id = cid

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        if self.client_id == 5:
            raise RuntimeError("sensor bus down")
        t = np.float32(self.client_id + 1)
        return TrainResult(params=[0.5 * p + t for p in params], steps=1, loss=0.1, num_examples=self.n)

    @property
    def n(self) -> int:
        return 10 * (self.client_id + 1)

    def loss(self, params: Params) -> float:
        return 0.0

    def evaluate(self, params: Params) -> EvalResult:
        return EvalResult(self.client_id, 1, 0.0, 1.0)


def _task(ids: list[int]) -> FitTask:
    strategy = FedAvg()
    runtime = ClientRuntime(Affine, strategy, Pipeline(), seed=0)
    agg = Aggregator.for_run(strategy, Pipeline(), ParamSpec.of(INIT))
    rctx = RoundContext(round_num=1, rng=np.random.default_rng(0), spec=agg.validator.spec, num_sampled=len(ids))
    ins = FitInstructions(round_num=1, train=TrainConfig())
    return FitTask(runtime, 1, ids, INIT, ins, {}, agg.reducer(rctx, len(ids)))


def _sum(items: list[Any], task: FitTask) -> Accumulator:
    acc = Accumulator()
    for item in items:
        if isinstance(item, PartialSum):
            acc.add(item.terms, count=len(item.client_ids))
        elif not isinstance(item, ClientFailure):
            assert task.reducer is not None
            acc.add(task.reducer(item))
    return acc


def test_sum_of_relay_sums_is_the_flat_sum_and_only_sums_leave_a_relay() -> None:
    ids = [0, 1, 2, 3, 4, 6, 7, 9]
    flat = _sum(list(SequentialBackend().fit(_task(ids))), _task(ids))
    items = list(HierarchyBackend(SequentialBackend(), Topology(12, 4), kappa1=1).fit(_task(ids)))
    assert all(isinstance(i, PartialSum) for i in items)
    assert [i.client_ids for i in items] == [[0, 1, 2, 3], [4, 6, 7], [9]]
    tree = _sum(items, _task(ids))
    assert tree.count == flat.count == 8
    assert tree.sums.keys() == flat.sums.keys()
    for name in flat.sums:
        for a, b in zip(tree.sums[name], flat.sums[name], strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(fanout=st.integers(1, 5), relays=st.integers(1, 4), data=st.data())
def test_relay_sums_compose_for_any_tree_and_cohort(fanout: int, relays: int, data: st.DataObject) -> None:
    n = fanout * relays
    ids = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
    flat_items = list(SequentialBackend().fit(_task(ids)))
    items = list(HierarchyBackend(SequentialBackend(), Topology(n, fanout), kappa1=1).fit(_task(ids)))
    flat, tree = _sum(flat_items, _task(ids)), _sum(items, _task(ids))
    assert tree.count == flat.count == len([c for c in ids if c != 5])
    covered = sorted(c for i in items if isinstance(i, PartialSum) for c in i.client_ids)
    lost = sorted(f.client_id for i in items for f in (i.failures if isinstance(i, PartialSum) else [i]))
    assert sorted(covered + lost) == ids
    for name in flat.sums:
        for a, b in zip(tree.sums[name], flat.sums[name], strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


def test_a_failing_child_is_reported_and_its_relay_sums_the_others() -> None:
    items = list(HierarchyBackend(SequentialBackend(), Topology(8, 4), kappa1=2).fit(_task([4, 5, 6])))
    (only,) = items
    assert isinstance(only, PartialSum) and only.client_ids == [4, 6]
    assert [(f.client_id, f.stage) for f in only.failures] == [(5, "fit")]
    assert "sensor bus down" in only.failures[0].reason


def test_two_edge_steps_average_the_edge_models_by_hand() -> None:
    """Relay 0 = clients 0, 1 (t = 1, 2; n = 10, 20); relay 1 = clients 2, 3 (t = 3, 4; n = 30, 40).

    Edge step 1: w1 = 0.5 w + tbar (tbar: the example-weighted mean of t); step 2: w2 = 0.5 w1 + tbar
    = 0.25 w + 1.5 tbar. The cloud: the example-weighted mean of the relays' w2.
    """
    w = INIT[0].astype(np.float64)
    tbar0, tbar1 = (10 * 1 + 20 * 2) / 30, (30 * 3 + 40 * 4) / 70
    relay0, relay1 = 0.25 * w + 1.5 * tbar0, 0.25 * w + 1.5 * tbar1
    expected = (30 * relay0 + 70 * relay1) / 100
    task = _task([0, 1, 2, 3])
    items = list(HierarchyBackend(SequentialBackend(), Topology(4, 2), kappa1=2).fit(task))
    acc = _sum(items, task)
    new, _ = FedAvg().aggregate(FedAvg().init(INIT, num_clients=4), acc.sums)
    np.testing.assert_allclose(new.params[0], expected, rtol=1e-6)
    # Without re-basing the second step's deltas the cloud would move by only one step from w1.
    assert not np.allclose(new.params[0], 0.5 * w + (30 * tbar0 + 70 * tbar1) / 100)


def _exp(name: str = "fedavg", **extra: Any) -> Any:
    raw: dict[str, Any] = {
        "seed": 4,
        "rounds": 3,
        "data": {"num_clients": 12},
        "model": {"name": "logreg", "framework": "numpy"},
        "training": {"clients_per_round": 8, "local_epochs": 1, "batch_size": 16, "lr": 0.2},
    }
    raw.update(extra)
    raw["strategy"] = {"name": name, **extra.get("strategy", {})}
    return from_dict(raw)


CENTRAL_DP = {
    "privacy": {"mode": "central", "clip_norm": 0.5, "noise_multiplier": 0.3},
    "strategy": {"name": "fedavg", "weighting": "uniform"},
}


@pytest.mark.parametrize(("strategy", "extra"), [("fedavg", {}), ("scaffold", {}), ("fedavg", CENTRAL_DP)])
def test_kappa1_of_one_equals_flat_training_on_the_same_clients(strategy: str, extra: dict[str, Any]) -> None:
    flat = execute(build(_exp(strategy, **extra)))
    tree = execute(build(_exp(strategy, **extra, hierarchy={"enabled": True, "zones_per_vehicle": 4, "kappa1": 1})))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(flat.state.params, tree.state.params, strict=True))
    assert diff <= 1e-6
    assert [r.participants for r in tree.history] == [r.participants for r in flat.history] == [8, 8, 8]
    np.testing.assert_allclose(
        [r.test_accuracy for r in tree.history], [r.test_accuracy for r in flat.history], atol=1e-9
    )
    if extra:  # the same noise on the same sums, and the same ε
        assert tree.history.rounds[-1].extra["epsilon"] == flat.history.rounds[-1].extra["epsilon"] > 0


def test_edge_steps_change_the_model_and_train_every_child_kappa1_times() -> None:
    one = execute(build(_exp(hierarchy={"enabled": True, "zones_per_vehicle": 4, "kappa1": 1})))
    three = execute(build(_exp(hierarchy={"enabled": True, "zones_per_vehicle": 4, "kappa1": 3})))
    assert not np.allclose(one.state.params[0], three.state.params[0])
    for a, b in zip(one.history, three.history, strict=True):
        assert b.extra["edge_steps"] == 3 and b.extra["lan_up_bytes"] == 3 * a.extra["lan_up_bytes"]
        assert b.extra["wan_bytes"] == a.extra["wan_bytes"]


def test_edge_steps_on_the_vectorized_backend_match_the_sequential_one() -> None:
    """One vehicle of 12 zones: its 8 selected zones are batched together in each edge step."""
    parts: dict[str, Any] = {
        "rounds": 1,
        "data": {"num_clients": 12, "partition": "iid"},
        "model": {"name": "logreg", "framework": "torch"},
    }
    h = {"enabled": True, "zones_per_vehicle": 12, "kappa1": 2}
    seq = execute(build(_exp(**parts, hierarchy=h)))
    fed = build(_exp(**parts, hierarchy=h))
    fed.backend = "vectorized"
    vec = execute(fed)
    backend = fed.transport.backend
    assert isinstance(backend, HierarchyBackend) and backend.inner.name == "vectorized"
    assert getattr(backend.inner, "round_info", {}).get("batched_clients", 0) == 8
    for a, b in zip(seq.state.params, vec.state.params, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
