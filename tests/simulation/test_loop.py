"""The round loop: determinism, streaming, rejection, callbacks, failures."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from fedge.clients import LearnerClient, NumpyLogReg
from fedge.core.errors import ClientError
from fedge.core.types import ClientContext, ClientUpdate, TrainConfig
from fedge.data import synthetic
from fedge.engine import Callback, RoundPlan, RoundPolicy, StopRun, run
from fedge.pipeline import Pipeline, Transform
from fedge.simulation import Sampling
from fedge.strategies import FedAvg
from fedge.transport import DebugBackend, FitResult, FitTask, InProcessTransport, SequentialBackend

FD = synthetic(0.5, 0.5, num_clients=10, seed=0)
MODEL = NumpyLogReg(60, 10)


def client_fn(cid: int) -> LearnerClient:
    return LearnerClient(cid, MODEL, FD.client(cid))


def go(
    rounds: int = 3,
    *,
    pipeline: Pipeline | None = None,
    backend=None,
    callbacks=(),
    policy=None,
    seed: int = 0,
    fn=client_fn,
    min_updates: int = 1,
):
    strategy = FedAvg()
    pipe = pipeline or Pipeline()
    transport = InProcessTransport(
        fn, FD.num_clients, strategy=strategy, pipeline=pipe, seed=seed, backend=backend or DebugBackend()
    )
    x, y = FD.central()
    return run(
        strategy=strategy,
        transport=transport,
        initial_params=MODEL.init_params(seed),
        rounds=rounds,
        sampling=Sampling(count=4),
        train=TrainConfig(lr=0.01, epochs=2),
        pipeline=pipe,
        evaluator=lambda p: MODEL.evaluate(p, x, y),
        seed=seed,
        callbacks=callbacks,
        policy=policy,
        min_updates=min_updates,
    )


def test_same_seed_gives_bit_identical_history_and_model() -> None:
    a, b = go(), go()
    for pa, pb in zip(a.state.params, b.state.params, strict=True):
        assert np.array_equal(pa, pb)
    strip = lambda h: [json.dumps({**r.to_json(), "wall_s": 0}) for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    c = go(seed=1)
    assert not np.array_equal(a.state.params[0], c.state.params[0])


def test_history_records_a_round() -> None:
    res = go(rounds=2)
    assert [r.round for r in res.history] == [1, 2]
    r = res.history.rounds[-1]
    assert r.participants == 4 and r.failed == 0
    assert 0 <= r.test_accuracy <= 1 and np.isfinite(r.train_loss)
    assert r.uplink_bytes == 4 * (60 * 10 + 10) * 4
    assert r.downlink_bytes == r.uplink_bytes


class Poison(Transform):
    """Client 0 sends NaN."""

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        if ctx.client_id in self.bad:
            update.delta[0][0, 0] = np.nan
        return update

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad


def test_nan_update_is_rejected_with_client_and_reason() -> None:
    res = go(rounds=3, pipeline=Pipeline([Poison(set(range(10)) - {1, 2, 3, 4, 5})]))
    dropped = [d for r in res.history for reason, ids in r.dropped.items() if "NaN" in reason for d in ids]
    assert dropped, "some sampled client should have been rejected"
    assert all(d not in {1, 2, 3, 4, 5} for d in dropped)
    assert np.all(np.isfinite(res.state.params[0]))


def test_round_without_enough_updates_leaves_model_unchanged() -> None:
    res = go(rounds=1, pipeline=Pipeline([Poison(set(range(10)))]))
    rec = res.history.rounds[0]
    assert rec.participants == 0 and "skipped" in rec.extra
    for p, q in zip(res.state.params, MODEL.init_params(0), strict=True):
        assert np.array_equal(p, q)


class Boom:
    client_id = 0

    def __init__(self, cid: int) -> None:
        self.client_id = cid

    def train(self, *a, **k):
        raise RuntimeError("disk full")


def failing_fn(cid: int):
    return Boom(cid) if cid % 2 else client_fn(cid)


def test_debug_backend_names_client_round_and_stage() -> None:
    with pytest.raises(ClientError, match=r"client \d+ failed in round 1 during fit: RuntimeError: disk full"):
        go(rounds=1, fn=failing_fn)


def test_sequential_backend_records_failures_and_continues() -> None:
    res = go(rounds=2, fn=failing_fn, backend=SequentialBackend())
    failed = [cid for r in res.history for reason, ids in r.dropped.items() for cid in ids]
    assert failed and all(cid % 2 for cid in failed)
    assert all(r.participants + r.failed == 4 for r in res.history)


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_run_start(self, state, rounds):
        self.events.append(f"start{rounds}")

    def on_round_end(self, record, state):
        self.events.append(f"r{record.round}")
        if record.round == 2:
            raise StopRun("enough")

    def on_run_end(self, history, state):
        self.events.append(f"end{len(history)}")


def test_callbacks_and_stop() -> None:
    rec = Recorder()
    res = go(rounds=5, callbacks=[rec])
    assert rec.events == ["start5", "r1", "r2", "end2"]
    assert res.stopped_early == "enough"


class HalfWork(RoundPolicy):
    def plan(self, round_num, selected, rng):
        return RoundPlan(
            train=selected[:2],
            dropped={"too slow": selected[2:]},
            overrides={cid: {"max_steps": 1} for cid in selected[:2]},
        )

    def finish(self, round_num, record, client_metrics):
        record.extra["steps"] = sorted(m["steps"] for m in client_metrics.values())


def test_round_policy_controls_who_trains_and_how_much() -> None:
    res = go(rounds=1, policy=HalfWork())
    r = res.history.rounds[0]
    assert r.participants == 2 and len(r.dropped["too slow"]) == 2
    assert r.extra["steps"] == [1.0, 1.0]


def test_transforms_added_to_an_empty_pipeline_reach_the_clients() -> None:
    pipe = Pipeline()
    strategy = FedAvg()
    transport = InProcessTransport(client_fn, FD.num_clients, strategy=strategy, pipeline=pipe)
    pipe.transforms.append(Poison(set(range(10))))
    x, y = FD.central()
    res = run(
        strategy=strategy,
        transport=transport,
        initial_params=MODEL.init_params(0),
        rounds=1,
        sampling=Sampling(count=4),
        pipeline=pipe,
        evaluator=lambda p: MODEL.evaluate(p, x, y),
    )
    assert res.history.rounds[0].participants == 0


class Recording(SequentialBackend):
    """A custom backend: gets one FitTask per round and runs it sequentially."""

    name = "recording"

    def __init__(self) -> None:
        self.tasks: list[FitTask] = []

    def fit(self, task: FitTask) -> Iterator[FitResult]:
        self.tasks.append(task)
        return super().fit(task)


def test_a_backend_receives_each_round_as_one_task() -> None:
    backend = Recording()
    res = go(rounds=2, backend=backend)
    assert [t.round_num for t in backend.tasks] == [1, 2]
    for task, rec in zip(backend.tasks, res.history, strict=True):
        assert len(task.client_ids) == 4 == rec.participants
        assert task.ins.round_num == task.round_num
        assert task.reducer is not None and task.reducer.rctx.round_num == task.round_num
        assert task.states is backend.tasks[0].states
    assert set(backend.tasks[0].states) >= set(backend.tasks[0].client_ids)
    np.testing.assert_array_equal(res.state.params[0], go(rounds=2).state.params[0])
