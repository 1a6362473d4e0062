"""Personalisation strategies (fine-tune, Ditto, FedPer, FedRep) and HeteroFL: their invariants."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fedge.clients.base import ClientData, Learner, LearnerClient
from fedge.compression import Compress, Float16
from fedge.core.errors import ConfigError
from fedge.core.params import Params, ParamSpec
from fedge.core.types import ClientUpdate, TrainConfig
from fedge.data.w2 import w2
from fedge.engine import EvalPlan, RunResult, check_pipeline, run, worst_mean
from fedge.models import build_learner
from fedge.pipeline import Pipeline, Transform
from fedge.simulation.backends import ProcessesBackend, VectorizedBackend
from fedge.simulation.sampling import Sampling
from fedge.strategies import Accumulator, Ditto, FedAvg, FedPer, FedRep, FineTune, HeteroFL
from fedge.strategies.base import Strategy, StrategyState
from fedge.strategies.ditto import STATE_KEY as DITTO_KEY
from fedge.strategies.fedper import STATE_KEY as HEAD_KEY
from fedge.strategies.heterofl import width_shapes
from fedge.transport.inprocess import BACKENDS, Backend, InProcessTransport

N = 6
TRAIN = TrainConfig(epochs=2, batch_size=4, lr=0.1)


def _clients() -> list[ClientData]:
    """Label-skewed clients: each sees mostly two classes, with its own test data."""
    data = w2(N * 4, samples_per_client=20, test_size=0, seed=3)
    x, y = data.x, data.y
    out = []
    for k in range(N):
        keep = np.flatnonzero((y % N == k) | (y % N == (k + 1) % N))[:24]
        out.append(ClientData(x[keep[:16]], y[keep[:16]], x[keep[16:]], y[keep[16:]]))
    return out


def _learner(width: float = 1.0) -> Learner:
    return build_learner("mlp", "torch", (60,), 10, (16,), width=width)


def _run(
    strategy: Strategy,
    *,
    backend: Backend | None = None,
    rounds: int = 3,
    learners: dict[int, Learner] | None = None,
    fed_eval: bool = False,
) -> tuple[RunResult, InProcessTransport]:
    clients = _clients()
    full = _learner()
    transport = InProcessTransport(
        lambda cid: LearnerClient(cid, (learners or {}).get(cid, full), clients[cid]),
        N,
        strategy=strategy,
        seed=7,
        backend=backend or BACKENDS["debug"](),
    )
    try:
        result = run(
            strategy=strategy,
            transport=transport,
            initial_params=full.init_params(0),
            rounds=rounds,
            sampling=Sampling(count=N),
            train=TRAIN,
            seed=7,
            eval_plan=EvalPlan(federated_clients=-1 if fed_eval else 0),
        )
    finally:
        transport.close()
    return result, transport


def _equal(a: Params, b: Params) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def _close(a: Params, b: Params) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


class _Keep(FedAvg):
    """FedAvg that remembers the model it sent each round (for Ditto's λ → ∞ limit)."""

    sent: dict[int, Params]

    def configure(self, state: StrategyState, round_num: int, train: TrainConfig) -> Any:
        self.sent[round_num] = [p.copy() for p in state.params]
        return super().configure(state, round_num, train)


def test_ditto_with_infinite_lambda_is_fedavg() -> None:
    ref = _Keep()
    ref.sent = {}
    fedavg, _ = _run(ref)
    ditto, transport = _run(Ditto(ditto_lambda=math.inf))
    _equal(ditto.state.params, fedavg.state.params)
    assert [r.train_loss for r in ditto.history] == [r.train_loss for r in fedavg.history]
    for cid in range(N):
        _equal(transport.states[cid][DITTO_KEY], ref.sent[3])


def test_ditto_with_finite_lambda_keeps_a_personal_model_of_its_own() -> None:
    fedavg, _ = _run(FedAvg())
    ditto, transport = _run(Ditto(ditto_lambda=0.1))
    _equal(ditto.state.params, fedavg.state.params)
    v = transport.states[0][DITTO_KEY]
    assert max(float(np.abs(a - b).max()) for a, b in zip(v, ditto.state.params, strict=True)) > 1e-3


def test_fedrep_shared_part_is_fedavg_over_the_body() -> None:
    rng = np.random.default_rng(0)
    params = _learner().init_params(0)
    spec = ParamSpec.of(params)
    full = [[rng.normal(size=p.shape).astype(np.float32) for p in params] for _ in range(4)]
    sizes = [3, 5, 8, 13]
    fedavg, fedrep = FedAvg(), FedRep()
    acc_avg, acc_rep = Accumulator(), Accumulator()
    for cid, (d, n) in enumerate(zip(full, sizes, strict=True)):
        acc_avg.add(fedavg.contribution(ClientUpdate(cid, d, n)))
        body = [*d[:2], np.zeros(0, np.float32), np.zeros(0, np.float32)]
        fedrep.update_spec(spec, cid).check(body)
        acc_rep.add(fedrep.contribution(ClientUpdate(cid, body, n)))
    avg, _ = fedavg.aggregate(fedavg.init(params, num_clients=4), acc_avg.sums)
    rep, _ = fedrep.aggregate(fedrep.init(params, num_clients=4), acc_rep.sums)
    _equal(rep.params[:2], avg.params[:2])
    _equal(rep.params[2:], params[2:])


@pytest.mark.parametrize("make", [FedPer, FedRep], ids=["fedper", "fedrep"])
def test_personal_head_stays_home_and_only_the_body_travels(make: type[FedPer]) -> None:
    result, transport = _run(make())
    initial = _learner().init_params(0)
    _equal(result.state.params[2:], initial[2:])
    body_bytes = sum(p.nbytes for p in initial[:2])
    for rec in result.history:
        assert rec.uplink_bytes == rec.participants * body_bytes
    heads = [transport.states[c][HEAD_KEY] for c in range(N)]
    assert all(h[0].shape == initial[2].shape for h in heads)
    assert float(np.abs(heads[0][0] - heads[1][0]).max()) > 1e-4


def test_fedrep_head_phase_leaves_the_body_alone() -> None:
    learner = _learner()
    params = learner.init_params(0)
    data = _clients()[0]
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.1, frozen=(0, 1))
    out = learner.train(params, data.x_train, data.y_train, cfg, np.random.default_rng(0)).params
    _equal(out[:2], params[:2])
    assert float(np.abs(out[2] - params[2]).max()) > 1e-4


def test_heterofl_with_every_width_one_is_fedavg_exactly() -> None:
    fedavg, _ = _run(FedAvg())
    hetero, _ = _run(HeteroFL(widths=dict.fromkeys(range(N), 1.0)))
    _equal(hetero.state.params, fedavg.state.params)
    assert [r.uplink_bytes for r in hetero.history] == [r.uplink_bytes for r in fedavg.history]
    assert [r.downlink_bytes for r in hetero.history] == [r.downlink_bytes for r in fedavg.history]


@pytest.mark.parametrize(("name", "shape", "hidden"), [("mlp", (60,), (16, 8)), ("cnn", (64,), ())])
@pytest.mark.parametrize("ratio", [0.5, 0.25, 0.125])
def test_heterofl_blocks_are_the_narrow_models_shapes(
    name: str, shape: tuple[int, ...], hidden: tuple[int, ...], ratio: float
) -> None:
    full = ParamSpec.of(build_learner(name, "torch", shape, 10, hidden).init_params(0))
    narrow = ParamSpec.of(build_learner(name, "torch", shape, 10, hidden, width=ratio).init_params(0))
    assert width_shapes(full.shapes, ratio, name) == narrow.shapes


def test_heterofl_averages_each_entry_over_the_clients_that_hold_it() -> None:
    params = [
        np.zeros((4, 2), np.float32),
        np.zeros(4, np.float32),
        np.zeros((3, 4), np.float32),
        np.zeros(3, np.float32),
    ]
    strategy = HeteroFL(widths={0: 1.0, 1: 0.5})
    state = strategy.init(params, num_clients=2)
    strategy.configure(state, 1, TRAIN)
    acc = Accumulator()
    acc.add(strategy.contribution(ClientUpdate(0, [np.ones_like(p) for p in params], 1)))
    half = strategy.update_spec(ParamSpec.of(params), 1).shapes
    assert half == ((2, 2), (2,), (3, 2), (3,))
    acc.add(strategy.contribution(ClientUpdate(1, [np.full(s, 3.0, np.float32) for s in half], 3)))
    new, _ = strategy.aggregate(state, acc.sums)
    w1 = new.params[0]
    np.testing.assert_allclose(w1[:2], 2.5)
    np.testing.assert_allclose(w1[2:], 1.0)
    np.testing.assert_allclose(new.params[2][:, :2], 2.5)
    np.testing.assert_allclose(new.params[2][:, 2:], 1.0)
    np.testing.assert_allclose(new.params[3], 2.5)


def test_heterofl_narrow_clients_send_and_receive_their_sub_model() -> None:
    widths = {c: (0.25 if c % 2 else 1.0) for c in range(N)}
    learners = {c: _learner(r) for c, r in widths.items() if r < 1}
    result, _ = _run(HeteroFL(widths=widths), learners=learners, fed_eval=True)
    full = sum(p.nbytes for p in _learner().init_params(0))
    small = sum(p.nbytes for p in _learner(0.25).init_params(0))
    for rec in result.history:
        assert rec.participants == N
        assert rec.uplink_bytes == rec.downlink_bytes == 3 * full + 3 * small
    assert result.history.rounds[-1].fed_test_accuracy > 0


def test_vectorized_refuses_per_client_models_and_runs_ditto() -> None:
    with pytest.raises(ConfigError, match="vectorized"):
        _run(FedRep(), backend=VectorizedBackend())
    want, want_t = _run(Ditto(ditto_lambda=0.5))
    got, got_t = _run(Ditto(ditto_lambda=0.5), backend=VectorizedBackend())
    _close(got.state.params, want.state.params)
    for cid in range(N):
        _close(got_t.states[cid][DITTO_KEY], want_t.states[cid][DITTO_KEY])


def test_partial_update_strategies_refuse_whole_model_transforms() -> None:
    class Summing(Transform):
        name = "secagg"

        def sum_cohort(self, updates: object, rctx: object, transport: object) -> object:
            raise NotImplementedError

    for transform in (Compress(Float16()), Summing()):
        for strategy in (HeteroFL(), FedRep()):
            with pytest.raises(ConfigError, match="part of the model"):
                check_pipeline(strategy, Pipeline([transform]))
    check_pipeline(Ditto(), Pipeline([Summing()]))


def test_worst_mean_is_the_mean_of_the_lowest_tenth() -> None:
    assert worst_mean([0.9] * 18 + [0.1, 0.3]) == pytest.approx(0.2)
    assert worst_mean([0.5, 0.7, 0.2]) == pytest.approx(0.2)
    assert math.isnan(worst_mean([]))


def test_federated_evaluation_reports_personal_and_global_distributions() -> None:
    result, _ = _run(FineTune(finetune_epochs=3, finetune_lr=0.1, finetune_batch_size=4), rounds=2, fed_eval=True)
    extra = result.history.rounds[-1].extra
    for key in ("client_acc_mean", "client_acc_worst10", "personal_acc_mean", "personal_acc_worst10"):
        assert 0.0 <= extra[key] <= 1.0
    assert extra["client_acc_worst10"] <= extra["client_acc_mean"]
    assert extra["personal_acc_mean"] != extra["client_acc_mean"]
    plain, _ = _run(FedAvg(), rounds=2, fed_eval=True)
    assert "personal_acc_mean" not in plain.history.rounds[-1].extra
    assert plain.history.rounds[-1].extra["client_acc_mean"] == extra["client_acc_mean"]


def _states(transport: InProcessTransport, key: str) -> dict[int, Params]:
    return {c: s[key] for c, s in transport.states.items() if key in s}


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["sequential", "processes"])
def test_personal_state_survives_rounds_on_every_backend(backend: str) -> None:
    """Ditto's personal models and FedRep's heads come out of three rounds on each backend as on the
    debug one; a personal state restarted every round would not. (Ray: tests/simulation/test_ray.py,
    on a real cluster; vectorized: test_vectorized_refuses_per_client_models_and_runs_ditto.)"""

    def make() -> Backend:
        return ProcessesBackend(workers=2) if backend == "processes" else BACKENDS[backend]()

    for strategy, key in ((lambda: Ditto(ditto_lambda=0.5), DITTO_KEY), (FedRep, HEAD_KEY)):
        want, want_t = _run(strategy())
        got, got_t = _run(strategy(), backend=make())
        _close(got.state.params, want.state.params)
        want_s, got_s = _states(want_t, key), _states(got_t, key)
        assert set(got_s) == set(want_s) == set(range(N))
        for cid, v in want_s.items():
            _close(got_s[cid], v)
        _, fresh_t = _run(strategy(), rounds=1)
        assert max(float(np.abs(a - b).max()) for a, b in zip(_states(fresh_t, key)[0], want_s[0], strict=True)) > 1e-4
