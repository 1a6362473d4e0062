"""Every execution backend gives the debug backend's global model, for the same seed."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from fedge.clients.base import ClientData, LearnerClient, TrainResult
from fedge.clients.torch_learner import TorchLearner
from fedge.compression.codecs import Int8
from fedge.compression.transforms import Compress
from fedge.core.errors import ConfigError
from fedge.core.params import Params
from fedge.core.types import ClientContext, EvalResult, FitInstructions, TrainConfig
from fedge.data.w2 import w2
from fedge.engine import run
from fedge.federation import make_backend
from fedge.pipeline import Pipeline, Transform
from fedge.privacy.transforms import CentralDP
from fedge.simulation.backends import ProcessesBackend, VectorizedBackend
from fedge.simulation.backends._shard import balance
from fedge.simulation.backends.vectorized import MAX_WASTE, MIN_BATCH, Bucket, plan_buckets
from fedge.simulation.sampling import Sampling
from fedge.strategies.base import Strategy
from fedge.strategies.fedavg import FedAvg
from fedge.strategies.fedprox import FedProx
from fedge.strategies.scaffold import STATE_KEY, Scaffold
from fedge.transport.inprocess import BACKENDS, Backend, InProcessTransport


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(60, 16), nn.ReLU(), nn.Linear(16, 10))


def _federation(num_clients: int = 12) -> tuple[TorchLearner, list[ClientData]]:
    """Ragged clients (sizes 3..31) so padding, masking and uneven step counts are exercised."""
    data = w2(num_clients, samples_per_client=31, test_size=0, seed=3)
    sizes = 3 + (np.arange(num_clients) * 7) % 29
    clients = [ClientData(data.x[k * 31 : k * 31 + s], data.y[k * 31 : k * 31 + s]) for k, s in enumerate(sizes)]
    return TorchLearner(_mlp), clients


def _run(
    backend: Backend, strategy: Strategy, *, rounds: int = 3, train: TrainConfig | None = None
) -> tuple[Params, InProcessTransport]:
    learner, clients = _federation()
    torch.manual_seed(0)
    initial = learner.init_params(0)
    transport = InProcessTransport(
        lambda cid: LearnerClient(cid, learner, clients[cid]), len(clients), strategy=strategy, seed=7, backend=backend
    )
    try:
        result = run(
            strategy=strategy,
            transport=transport,
            initial_params=initial,
            rounds=rounds,
            sampling=Sampling(count=8),
            seed=7,
            train=train or TrainConfig(epochs=2, batch_size=4, lr=0.1),
        )
    finally:
        transport.close()
    return result.state.params, transport


STRATEGIES = {"fedavg": FedAvg, "fedprox": lambda: FedProx(mu=0.5), "scaffold": Scaffold}


Reference = dict[str, tuple[Params, dict[int, dict[str, Any]]]]


@pytest.fixture(scope="module")
def reference() -> Reference:
    out: Reference = {}
    for name, make in STRATEGIES.items():
        params, transport = _run(BACKENDS["debug"](), make())
        out[name] = (params, transport.states)
    return out


def _close(a: Params, b: Params) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def _same_states(got: dict[int, dict[str, Any]], want: dict[int, dict[str, Any]]) -> None:
    """SCAFFOLD's client control variates survived the rounds exactly as on the debug backend."""
    assert {c for c, s in got.items() if s} == {c for c, s in want.items() if s}
    for cid, state in want.items():
        if STATE_KEY in state:
            _close(got[cid][STATE_KEY], state[STATE_KEY])


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_vectorized_matches_debug(strategy: str, reference: Reference) -> None:
    backend = VectorizedBackend(chunk=5)
    params, transport = _run(backend, STRATEGIES[strategy]())
    _close(params, reference[strategy][0])
    _same_states(transport.states, reference[strategy][1])
    assert backend.fallback_reasons == set()


@pytest.mark.integration
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_processes_match_debug(strategy: str, reference: Reference) -> None:
    params, transport = _run(ProcessesBackend(workers=2), STRATEGIES[strategy]())
    _close(params, reference[strategy][0])
    _same_states(transport.states, reference[strategy][1])


def test_vectorized_respects_per_client_step_limits() -> None:
    """A straggler's ``max_steps`` masks it out of later lock-step steps, as sequential training would."""
    learner, clients = _federation(4)
    params = learner.init_params(1)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=0.1, max_steps=2)
    for k in range(4):
        seq = learner.train(params, clients[k].x_train, clients[k].y_train, cfg, np.random.default_rng(k))
        assert seq.steps == 2
    ref = _run(BACKENDS["debug"](), FedAvg(), train=cfg)[0]
    _close(_run(VectorizedBackend(chunk=3), FedAvg(), train=cfg)[0], ref)


class _OddClient:
    """A custom client the vectorized backend cannot batch: it must fall back."""

    def __init__(self, inner: LearnerClient) -> None:
        self.client_id = inner.client_id
        self.inner = inner

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        return self.inner.train(params, cfg, ctx)

    def loss(self, params: Params) -> float:
        return self.inner.loss(params)

    def evaluate(self, params: Params) -> EvalResult:
        return self.inner.evaluate(params)


def test_vectorized_falls_back_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    learner, clients = _federation()
    backend = VectorizedBackend()
    ref_transport = InProcessTransport(
        lambda cid: LearnerClient(cid, learner, clients[cid]), len(clients), strategy=FedAvg(), seed=7
    )
    transport = InProcessTransport(
        lambda cid: (
            _OddClient(LearnerClient(cid, learner, clients[cid]))
            if cid % 2
            else LearnerClient(cid, learner, clients[cid])
        ),
        len(clients),
        strategy=FedAvg(),
        seed=7,
        backend=backend,
    )
    initial = learner.init_params(0)
    kwargs: dict[str, Any] = dict(
        initial_params=initial,
        rounds=2,
        sampling=Sampling(count=8),
        seed=7,
        train=TrainConfig(epochs=1, batch_size=4, lr=0.1),
    )
    with caplog.at_level(logging.WARNING, logger="fedge.simulation.backends.vectorized"):
        got = run(strategy=FedAvg(), transport=transport, **kwargs).state.params
    want = run(strategy=FedAvg(), transport=ref_transport, **kwargs).state.params
    _close(got, want)
    assert backend.fallback_reasons == {"client type _OddClient is not a plain LearnerClient"}
    assert sum("not a plain LearnerClient" in r.message for r in caplog.records) == 1


def test_vectorized_falls_back_for_momentum() -> None:
    backend = VectorizedBackend()
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.05, momentum=0.9)
    _close(_run(backend, FedAvg(), rounds=2, train=cfg)[0], _run(BACKENDS["debug"](), FedAvg(), rounds=2, train=cfg)[0])
    assert any("momentum" in r for r in backend.fallback_reasons)


class _DyingLearner(TorchLearner):
    """Kills its worker process when it trains client 3."""

    def train(self, params: Params, x: Any, y: Any, cfg: TrainConfig, rng: np.random.Generator) -> TrainResult:
        if len(y) == _DYING_SIZE and os.getpid() != _PARENT:
            os._exit(17)
        return super().train(params, x, y, cfg, rng)


_PARENT = os.getpid()
_DYING_SIZE = 3 + (3 * 7) % 29


@pytest.mark.integration
def test_worker_death_loses_its_share_and_the_round_goes_on() -> None:
    _, clients = _federation()
    learner = _DyingLearner(_mlp)
    backend = ProcessesBackend(workers=2)
    transport = InProcessTransport(
        lambda cid: LearnerClient(cid, learner, clients[cid]), len(clients), strategy=FedAvg(), seed=7, backend=backend
    )
    try:
        result = run(
            strategy=FedAvg(),
            transport=transport,
            initial_params=learner.init_params(0),
            rounds=2,
            sampling=Sampling(count=len(clients)),
            seed=7,
            train=TrainConfig(epochs=1, batch_size=4, lr=0.1),
        )
    finally:
        transport.close()
    assert len(result.history) == 2
    for record in result.history:
        reasons = [r for r in record.dropped if "died (exit code 17)" in r]
        assert len(reasons) == 1
        lost = record.dropped[reasons[0]]
        assert 3 in lost
        assert record.participants == len(clients) - len(lost) > 0


def test_unknown_backend_lists_the_new_names() -> None:
    with pytest.raises(ConfigError, match="processes, ray, sequential, vectorized"):
        make_backend("warp")


def test_balance_covers_every_client_once_and_evens_out_sizes() -> None:
    ids = list(range(10))
    sizes = [100, 1, 1, 1, 1, 50, 50, 1, 1, 1]
    shares = balance(ids, sizes, 3)
    assert sorted(c for s in shares for c in s) == ids
    loads = sorted(sum(sizes[c] for c in s) for s in shares)
    assert loads[-1] == 100
    assert balance([1, 2], [5, 5], 4) == [[1], [2]]


def test_engine_section_reaches_the_configured_backend() -> None:
    from fedge.config.schema import from_dict
    from fedge.federation import build, execute

    exp = from_dict(
        {
            "rounds": 1,
            "data": {"num_clients": 6},
            "model": {"name": "logreg"},
            "training": {"backend": "vectorized", "clients_per_round": 4, "local_epochs": 1},
            "engine": {"vectorized_chunk": 3},
        }
    )
    built = build(exp)
    result = execute(built)
    backend = built.transport.backend
    assert isinstance(backend, VectorizedBackend)
    assert backend.chunk == 3
    assert backend.fallback_reasons == set()
    assert result.history.rounds[0].participants == 4


def test_engine_section_rejects_a_bad_value() -> None:
    from fedge.config.schema import from_dict

    with pytest.raises(ConfigError, match="workers"):
        from_dict({"engine": {"workers": -1}})


class _NeedsEveryUpdate(FedAvg):
    """A strategy that aggregates the list of updates (as median or Krum do)."""

    needs_individual_updates = True

    def aggregate_updates(self, state: Any, updates: list[Any]) -> tuple[Any, dict[str, float]]:
        from dataclasses import replace

        from fedge.strategies.aggregate import apply_step, weighted_mean

        mean = weighted_mean([u.delta for u in updates], [float(u.num_examples) for u in updates])
        return replace(state, params=apply_step(state.params, mean)), {}


@pytest.mark.parametrize("name", ["vectorized", "processes"])
def test_strategies_needing_every_update_get_them(name: str, reference: Reference) -> None:
    """Without a reducer the worker backends send each update, and the model is unchanged."""
    backend = VectorizedBackend() if name == "vectorized" else ProcessesBackend(workers=2)
    params, _ = _run(backend, _NeedsEveryUpdate())
    _close(params, reference["fedavg"][0])


def test_fedge_run_takes_the_engine_backends_by_name() -> None:
    """``fedge.run(..., backend="vectorized")`` finds the optional backend and matches debug."""
    import fedge.api

    _, clients = _federation(6)
    pairs = [(c.x_train, c.y_train) for c in clients]
    kwargs: dict[str, Any] = dict(rounds=2, clients_per_round=4, lr=0.1, seed=3)
    torch.manual_seed(0)
    got = fedge.api.run(_mlp(), pairs, backend="vectorized", **kwargs).state.params
    torch.manual_seed(0)
    want = fedge.api.run(_mlp(), pairs, backend="debug", **kwargs).state.params
    _close(got, want)
    with pytest.raises(ConfigError, match="unknown backend 'warp'"):
        fedge.api.run(_mlp(), pairs, backend="warp", **kwargs)


class _NoisyFeedback(Transform):
    """A client transform that draws from the client's generator after training and keeps a
    residual in the client's state: both must line up on every backend."""

    name = "noisy-feedback"

    def client(self, update: Any, ctx: ClientContext) -> Any:
        residual = ctx.state.get("residual", 0.0)
        noise = float(ctx.rng.normal()) * 1e-3
        update.delta = [(d + np.float32(noise + residual)).astype(np.float32) for d in update.delta]
        ctx.state["residual"] = residual + noise
        return update


@pytest.mark.parametrize("name", ["vectorized", "processes"])
def test_client_transforms_and_their_state_match_debug(name: str) -> None:
    def go(backend: Backend) -> tuple[Params, dict[int, dict[str, Any]]]:
        learner, clients = _federation()
        pipeline = Pipeline([_NoisyFeedback()])
        transport = InProcessTransport(
            lambda cid: LearnerClient(cid, learner, clients[cid]),
            len(clients),
            strategy=FedAvg(),
            pipeline=pipeline,
            seed=7,
            backend=backend,
        )
        try:
            result = run(
                strategy=FedAvg(),
                transport=transport,
                initial_params=learner.init_params(0),
                rounds=3,
                sampling=Sampling(count=8),
                seed=7,
                pipeline=pipeline,
                train=TrainConfig(epochs=1, batch_size=4, lr=0.1),
            )
        finally:
            transport.close()
        return result.state.params, transport.states

    backend = VectorizedBackend() if name == "vectorized" else ProcessesBackend(workers=2)
    got, got_states = go(backend)
    want, want_states = go(BACKENDS["debug"]())
    _close(got, want)
    residuals = {c: s["residual"] for c, s in want_states.items() if "residual" in s}
    assert residuals and {c: got_states[c]["residual"] for c in residuals} == residuals


class _StuckLearner(TorchLearner):
    """Hangs in its worker process when it trains client 3."""

    def train(self, params: Params, x: Any, y: Any, cfg: TrainConfig, rng: np.random.Generator) -> TrainResult:
        if len(y) == _DYING_SIZE and os.getpid() != _PARENT:
            time.sleep(120)
        return super().train(params, x, y, cfg, rng)


@pytest.mark.integration
def test_overdue_worker_is_stopped_and_its_share_lost() -> None:
    _, clients = _federation()
    learner = _StuckLearner(_mlp)
    backend = ProcessesBackend(workers=2, timeout_s=2.0)
    transport = InProcessTransport(
        lambda cid: LearnerClient(cid, learner, clients[cid]), len(clients), strategy=FedAvg(), seed=7, backend=backend
    )
    try:
        result = run(
            strategy=FedAvg(),
            transport=transport,
            initial_params=learner.init_params(0),
            rounds=1,
            sampling=Sampling(count=len(clients)),
            seed=7,
            train=TrainConfig(epochs=1, batch_size=4, lr=0.1),
        )
        (record,) = list(result.history)
        (reason,) = [r for r in record.dropped if "timed out after 2 s" in r]
        assert 3 in record.dropped[reason]
        assert record.participants == len(clients) - len(record.dropped[reason]) > 0
        assert len(backend._pool) == 1
    finally:
        transport.close()


BUCKETINGS = {"one bucket": (1.0, 1), "bounded waste": (0.25, 1), "default": (MAX_WASTE, MIN_BATCH)}


@pytest.mark.parametrize("bucketing", sorted(BUCKETINGS))
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_vectorized_buckets_match_debug(strategy: str, bucketing: str, reference: Reference) -> None:
    """However the cohort is bucketed (all together, bounded padding, small buckets per client)
    the model and SCAFFOLD's client states are those of the debug backend."""
    max_waste, min_batch = BUCKETINGS[bucketing]
    backend = VectorizedBackend(max_waste=max_waste, min_batch=min_batch)
    params, transport = _run(backend, STRATEGIES[strategy]())
    _close(params, reference[strategy][0])
    _same_states(transport.states, reference[strategy][1])
    info = backend.round_info
    assert info["wasted_step_fraction"] <= max_waste
    if bucketing == "bounded waste":
        assert info["buckets"] > 1 and info["batched_clients"] > info["buckets"]


def _pipeline(strategy: str) -> Pipeline:
    """A codec, and for the strategies without extra tensors client-side clipping too (central
    DP refuses SCAFFOLD's control-variate tensors)."""
    codec = Compress(Int8())
    if strategy == "scaffold":
        return Pipeline([codec])
    return Pipeline([CentralDP(clip_norm=0.5, noise_multiplier=0.1, expected_clients=8, clip_at="client"), codec])


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_vectorized_with_clipping_and_a_codec_matches_debug(strategy: str) -> None:
    def go(backend: Backend) -> tuple[Params, dict[int, dict[str, Any]]]:
        learner, clients = _federation()
        pipeline = _pipeline(strategy)
        made = STRATEGIES[strategy]()
        transport = InProcessTransport(
            lambda cid: LearnerClient(cid, learner, clients[cid]),
            len(clients),
            strategy=made,
            pipeline=pipeline,
            seed=7,
            backend=backend,
        )
        try:
            result = run(
                strategy=made,
                transport=transport,
                initial_params=learner.init_params(0),
                rounds=3,
                sampling=Sampling(count=8),
                seed=7,
                pipeline=pipeline,
                train=TrainConfig(epochs=2, batch_size=4, lr=0.1),
            )
        finally:
            transport.close()
        return result.state.params, transport.states

    want, want_states = go(BACKENDS["debug"]())
    for backend in (VectorizedBackend(max_waste=0.25, min_batch=1), VectorizedBackend()):
        got, got_states = go(backend)
        _close(got, want)
        _same_states(got_states, want_states)


@given(st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=60), st.sampled_from([0.1, 0.25]))
def test_buckets_cover_every_client_once_and_bound_the_padding(steps: list[int], max_waste: float) -> None:
    buckets = plan_buckets(steps, max_waste=max_waste, min_batch=1)
    assert sorted(i for b in buckets for i in b.members) == list(range(len(steps)))
    padded = done = 0
    for b in buckets:
        assert b.steps == max(steps[i] for i in b.members)
        padded += sum(b.steps - steps[i] for i in b.members)
        done += b.steps * len(b.members)
        assert sum(b.steps - steps[i] for i in b.members) <= max_waste * b.steps * len(b.members)
    assert padded <= max_waste * done


def test_one_long_client_runs_alone_and_the_rest_batch() -> None:
    """The W1 pessimisation: one client with thousands of steps no longer pads nine small ones."""
    steps = [5000, 40, 38, 41, 39, 40, 42, 37, 40, 39]
    buckets = plan_buckets(steps)
    alone = next(b for b in buckets if 0 in b.members)
    assert alone.members == (0,) and not alone.batched
    rest = [b for b in buckets if 0 not in b.members]
    assert len(rest) == 1 and rest[0].batched and len(rest[0].members) == 9
    assert plan_buckets([10] * 8) == [Bucket(tuple(range(8)), 10, True)]
    assert not any(b.batched for b in plan_buckets([10] * 3))


def test_vectorized_reports_its_padding() -> None:
    """``padded_steps`` is, over batched buckets, each client's distance to its bucket's longest
    schedule; it reaches the round's record through the ``[engine]`` callback."""
    from fedge.config.schema import from_dict
    from fedge.federation import build, execute

    learner, clients = _federation()
    steps = [-(-c.num_train // 4) for c in clients]  # one epoch of batch 4
    strategy = FedAvg()
    transport = InProcessTransport(
        lambda cid: LearnerClient(cid, learner, clients[cid]), len(clients), strategy=strategy, seed=7
    )
    params = learner.init_params(0)
    ins = FitInstructions(round_num=1, train=TrainConfig(epochs=1, batch_size=4, lr=0.1))
    padding: dict[float, int] = {}
    for max_waste in (1.0, 0.25):
        backend = VectorizedBackend(max_waste=max_waste, min_batch=1)
        transport.backend = backend
        assert len(list(transport.fit(1, list(range(12)), params, ins))) == 12
        info = backend.round_info
        padding[max_waste] = info["padded_steps"]
        batched = [b for b in plan_buckets(steps, max_waste=max_waste, min_batch=1) if b.batched]
        done = sum(b.steps * len(b.members) for b in batched)
        padded = done - sum(steps[i] for b in batched for i in b.members)
        assert info["padded_steps"] == padded and info["buckets"] == len(batched)
        assert info["batched_clients"] == sum(len(b.members) for b in batched)
        assert info["wasted_step_fraction"] == pytest.approx(padded / done) and padded / done <= max_waste
    assert padding[1.0] == 12 * max(steps) - sum(steps)
    assert padding[0.25] < padding[1.0]

    exp = from_dict(
        {
            "rounds": 2,
            "data": {"num_clients": 6},
            "model": {"name": "logreg"},
            "training": {"backend": "vectorized", "clients_per_round": 4, "local_epochs": 1},
        }
    )
    history = execute(build(exp)).history
    assert all("padded_steps" in r.extra and "wasted_step_fraction" in r.extra for r in history)
