"""Secure aggregation and DP per asynchronous buffer: the session's sum is exactly the plain sum of
the members' staleness-scaled fixed-point inputs (with dropouts), the staleness weights the clients
apply are the engine's, a pending input joins one session only, ε recomputed with dp-accounting."""

from __future__ import annotations

import json
from typing import Any

import dp_accounting
import numpy as np
import pytest
from click.testing import CliRunner
from dp_accounting import rdp

from fedge.cli.main import cli
from fedge.clients import LearnerClient, NumpyLogReg
from fedge.compression.transforms import RESIDUAL_KEY
from fedge.config.schema import from_dict
from fedge.core.errors import AggregationError, ConfigError
from fedge.core.params import ParamSpec
from fedge.core.types import ClientUpdate, TrainConfig
from fedge.data import synthetic
from fedge.engine.asynchronous import AsyncConfig, run_async, staleness_weight
from fedge.federation import build, execute
from fedge.pipeline import Pipeline, RoundContext
from fedge.secagg import SecAggConfig, SecureAggregation, fixedpoint
from fedge.secagg.client import PENDING, STATE_KEY
from fedge.secagg.messages import STAGES, RoundSetup
from fedge.secagg.orchestrator import run_round
from fedge.strategies import FedAvg
from fedge.transport import InProcessTransport
from fedge.transport.exchange import Exchanger

N = 8
FD = synthetic(0.5, 0.5, num_clients=N, seed=2)
MODEL = NumpyLogReg(60, 10)
SPEC = ParamSpec.of(MODEL.init_params(0))


def _pending_clients(**cfg: Any) -> tuple[SecureAggregation, InProcessTransport, list[ClientUpdate]]:
    """Every client trains once, in a batch of its own (as an asynchronous dispatcher sends them)."""
    t = SecureAggregation(SecAggConfig(enabled=True, clip=4.0, **cfg), FedAvg(), max_cohort=N, pending=True)
    tr = InProcessTransport(
        lambda cid: LearnerClient(cid, MODEL, FD.client(cid)), N, strategy=FedAvg(), pipeline=Pipeline([t]), seed=4
    )
    params = MODEL.init_params(0)
    state = FedAvg().init(params, num_clients=N)
    updates: list[ClientUpdate] = []
    for cid in range(N):
        ins = FedAvg().configure(state, cid + 1, TrainConfig())
        updates += [u for u in tr.fit(cid + 1, [cid], params, ins) if isinstance(u, ClientUpdate)]
    assert all(not u.delta and u.payload == {"secagg": "ready"} for u in updates)
    assert all(tr.states[c][STATE_KEY]["round_num"] == PENDING for c in range(N))
    return t, tr, updates


def _words(t: SecureAggregation, held: dict[str, Any], factor: float) -> np.ndarray:
    """The fixed-point input a pending client masks: its values times ``factor``, its own rounding."""
    rng = np.random.default_rng(held["seed"])
    return fixedpoint.encode(factor * held["values"], clip=t.range, scale=t.scale, rng=rng, bits=t.cfg.bits)


def _rctx(session: int) -> RoundContext:
    return RoundContext(round_num=session, rng=np.random.default_rng(session), spec=SPEC, num_sampled=N)


@pytest.mark.parametrize("stage", STAGES)
def test_a_secure_buffer_is_exactly_the_plain_sum_of_its_scaled_fixed_point_inputs(stage: str) -> None:
    t, tr, updates = _pending_clients(simulate_dropout=0.25, dropout_stage=stage)
    factors = {c: staleness_weight(c % 4, "polynomial", 0.5) for c in range(N)}
    held = {c: dict(tr.states[c][STATE_KEY]) for c in range(N)}
    terms, count, lost = t.sum_cohort(updates, _rctx(9), tr, factors=factors)
    (ids,) = [v for k, v in lost.items() if k == f"secagg {stage}: dropped"]
    assert len(ids) == 2
    included = sorted(set(range(N)) - (set() if stage == "unmask" else set(ids)))
    assert count == len(included)
    ring = np.zeros(SPEC.total + 1, dtype=np.uint32)
    for c in included:
        ring += _words(t, held[c], factors[c])
    flat = np.concatenate([np.ravel(x) for name in sorted(terms) for x in terms[name]])
    assert np.array_equal(flat, fixedpoint.decode(ring, scale=t.scale) * t.max_weight)
    # ... which is the staleness-weighted sum of the real terms, to the fixed-point resolution.
    real = sum(factors[c] * held[c]["values"] for c in included) * t.max_weight
    np.testing.assert_allclose(flat, real, atol=len(included) * t.max_weight / t.scale)
    assert not any(STATE_KEY in tr.states[c] for c in included if c not in ids)


def test_a_pending_input_joins_one_session_only_and_scales_only_within_zero_and_one() -> None:
    _, tr, _ = _pending_clients()
    length = SPEC.total + 1
    first = RoundSetup(3, tuple(range(N)), k=N - 1, t=5, length=length, graph_seed=1)
    tr.exchange(3, "advertise", {0: first}, 1.0)
    again = RoundSetup(4, tuple(range(N)), k=N - 1, t=5, length=length, graph_seed=1)
    got = tr.exchange(4, "advertise", {0: again}, 1.0)
    assert got.lost == {"ProtocolError: client 0 has no input for round 4": [0]}
    res = run_round(
        RoundSetup(5, tuple(range(1, N)), k=N - 2, t=4, length=length, graph_seed=2), tr, factors={1: 1.5, 2: 0.5}
    )
    assert res.dropped == {
        "masked_input: ProtocolError: client 1 was asked to scale its input by 1.5, outside [0, 1]": [1]
    }
    assert res.included == list(range(2, N))


def test_an_encoded_input_cannot_be_scaled() -> None:
    t = SecureAggregation(SecAggConfig(enabled=True), FedAvg(), max_cohort=N)
    tr = InProcessTransport(
        lambda cid: LearnerClient(cid, MODEL, FD.client(cid)), N, strategy=FedAvg(), pipeline=Pipeline([t]), seed=4
    )
    params = MODEL.init_params(0)
    ins = FedAvg().configure(FedAvg().init(params, num_clients=N), 1, TrainConfig())
    updates = [u for u in tr.fit(1, list(range(N)), params, ins) if isinstance(u, ClientUpdate)]
    with pytest.raises(ConfigError, match="only pending"):
        t.sum_cohort(updates, _rctx(1), tr, factors={0: 0.5})
    setup = RoundSetup(1, tuple(range(N)), k=N - 1, t=5, length=SPEC.total + 1, graph_seed=2)
    res = run_round(setup, tr, factors={3: 0.5})
    assert list(res.dropped) == [
        "masked_input: ProtocolError: this client's input is already encoded and cannot be scaled by 0.5"
    ]


class Paced:
    """Client ``i`` trains ``i + 1`` steps (``i + 1`` simulated seconds), moving each weight by ``0.01 (i + 1)``."""

    def __init__(self, cid: int) -> None:
        self.client_id = cid

    def train(self, params: Any, cfg: TrainConfig, ctx: Any) -> Any:
        from fedge.clients.base import TrainResult

        step = np.float32(0.01 * (self.client_id + 1))
        return TrainResult(
            params=[p + step for p in params],
            steps=self.client_id + 1,
            loss=0.5,
            num_examples=10 * (self.client_id + 1),
        )

    def loss(self, params: Any) -> float:
        return 0.0

    def evaluate(self, params: Any) -> Any:
        from fedge.core.types import EvalResult

        return EvalResult(self.client_id, 1, 0.0, 1.0)


class Watched(SecureAggregation):
    """Secure aggregation that records, per session, what each member held, its factor and the sum."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: list[dict[str, Any]] = []
        self.transport: InProcessTransport | None = None

    def sum_cohort(
        self, updates: list[ClientUpdate], rctx: RoundContext, transport: Exchanger, *, factors: Any = None
    ) -> Any:
        assert isinstance(transport, InProcessTransport)
        held = {u.client_id: transport.states[u.client_id][STATE_KEY]["values"].copy() for u in updates}
        out = super().sum_cohort(updates, rctx, transport, factors=factors)
        self.sessions.append(
            {"ids": [u.client_id for u in updates], "held": held, "factors": dict(factors), "sum": out[0]}
        )
        return out


def test_staleness_weights_under_secagg_are_applied_by_each_client_and_normalise_the_step() -> None:
    a = 1.0
    strategy = FedAvg()
    watched = Watched(SecAggConfig(enabled=True, clip=1.0), strategy, max_cohort=3, pending=True)
    transport = InProcessTransport(Paced, 5, strategy=strategy, pipeline=Pipeline([watched]))
    init = [np.zeros(3, dtype=np.float32)]
    result = run_async(
        strategy=strategy,
        transport=transport,
        initial_params=init,
        rounds=4,
        config=AsyncConfig(buffer_size=3, concurrency=4, staleness_exponent=a),
        pipeline=Pipeline([watched]),
    )
    assert len(result.history) == len(watched.sessions) == 4
    params = np.zeros(3)
    for rec, sess in zip(result.history, watched.sessions, strict=True):
        assert len(set(sess["ids"])) == 3  # no client twice in one buffer
        # s = 1 / (1 + τ): the staleness each client applied, read back, is the engine's.
        taus = sorted(round(1 / f - 1) for f in sess["factors"].values())
        assert np.mean(taus) == pytest.approx(rec.extra["staleness_mean"]) and max(taus) == rec.extra["staleness_max"]
        expected = sum(sess["factors"][c] * sess["held"][c] for c in sess["ids"]) * watched.max_weight
        flat = np.concatenate([np.ravel(x) for name in sorted(sess["sum"]) for x in sess["sum"][name]])
        np.testing.assert_allclose(flat, expected, atol=3 * watched.max_weight / watched.scale)
        # FedAvg's step: Σ s w Δ / Σ s w, the weight term scaled by the same factor.
        delta, weight = sess["sum"]["delta"][0], sess["sum"]["weight"][0]
        params += delta / weight[0]
    assert max(r.extra["staleness_max"] for r in result.history) >= 1
    np.testing.assert_allclose(result.state.params[0], params, atol=1e-6)


def _exp(secagg: bool, **extra: Any) -> Any:
    raw: dict[str, Any] = {
        "seed": 1,
        "rounds": 4,
        "data": {"num_clients": 40, "partition": "iid"},
        "model": {"name": "logreg", "framework": "numpy"},
        "training": {"clients_per_round": 10, "local_epochs": 1, "lr": 0.1},
        "strategy": {"name": "fedavg", "weighting": "uniform"},
        "privacy": {
            "mode": "central",
            "noise_multiplier": 1.3,
            "clip_norm": 0.5,
            "sampling": "none",
            "clip_at": "client",
        },
        "async": {"enabled": True, "buffer_size": 4, "concurrency": 12},
    }
    if secagg:
        raw["secagg"] = {"enabled": True, "simulate_dropout": 0.25}
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value}
    return from_dict(raw)


@pytest.mark.parametrize("secagg", [False, True])
def test_epsilon_of_an_asynchronous_run_is_that_of_one_gaussian_mechanism_per_applied_step(secagg: bool) -> None:
    fed = build(_exp(secagg))
    dp = next(t for t in fed.pipeline.transforms if t.name == "central_dp")
    assert dp.expected_clients == 4  # noise normalised by the buffer, not by clients_per_round
    result = execute(fed)
    assert len(result.history) == 4
    ref = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    for rec in result.history:
        assert rec.extra["dp_rounds"] == rec.round and rec.extra["sampling"] == "none"
        assert rec.extra["sampling_rate"] == 1.0
        ref.compose(dp_accounting.GaussianDpEvent(1.3))
        assert rec.extra["epsilon"] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-6)
        assert rec.participants == (3 if secagg else 4)
    assert max(r.extra["staleness_max"] for r in result.history) >= 1


def test_privacy_plan_for_an_asynchronous_run_matches_dp_accounting() -> None:
    args = ["privacy", "plan", "--epsilon", "8", "--rounds", "50", "--clients-per-round", "5", "--population", "100"]
    out = CliRunner().invoke(cli, [*args, "--async", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["sampling"] == "none" and data["asynchronous"] and "applied step" in data["assumption"]
    ref = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    ref.compose(dp_accounting.GaussianDpEvent(data["noise_multiplier"]), 50)
    assert ref.get_epsilon(1e-5) == pytest.approx(8.0, rel=1e-3)
    refused = CliRunner().invoke(cli, [*args, "--async", "--sampling", "poisson"])
    assert refused.exit_code == 2 and "not a uniform sample" in refused.output
    assert refused.output.count("\n") == 1


def test_uplink_compression_runs_with_error_feedback_kept_per_client() -> None:
    comp = {"codec": "topk", "k": 0.1}
    exp = _exp(False, compression=comp)
    exp.extensions.pop("privacy")
    plain = _exp(False)
    plain.extensions.pop("privacy")
    fed = build(exp)
    small, full = execute(fed), execute(build(plain))
    assert len(small.history) == 4
    assert sum(r.uplink_bytes for r in small.history) < sum(r.uplink_bytes for r in full.history) / 3
    residuals = [s[RESIDUAL_KEY] for s in fed.transport.states.values() if RESIDUAL_KEY in s]
    assert len(residuals) >= 4 and all(np.any(r[0] != 0) for r in residuals)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"privacy": {"sampling": "fixed"}}, "privacy.sampling = 'none'"),
        ({"privacy": {"sampling": "poisson"}}, "no sampling amplification"),
        ({"compression": {"downlink": "sign"}}, "compression.downlink = 'none'"),
    ],
)
def test_what_asynchronous_buffers_cannot_run_is_refused_in_one_line(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build(_exp(False, **extra))
    assert "\n" not in str(info.value)


def test_the_engine_refuses_secure_aggregation_that_encodes_at_training_in_one_line() -> None:
    strategy = FedAvg()
    fixed = SecureAggregation(SecAggConfig(enabled=True), strategy, max_cohort=3)
    with pytest.raises(ConfigError, match="pending") as info:
        run_async(
            strategy=strategy,
            transport=InProcessTransport(Paced, 4, strategy=strategy, pipeline=Pipeline([fixed])),
            initial_params=[np.zeros(3, dtype=np.float32)],
            rounds=1,
            config=AsyncConfig(buffer_size=3, concurrency=3),
            pipeline=Pipeline([fixed]),
        )
    assert "\n" not in str(info.value)


def _small(**extra: Any) -> Any:
    raw: dict[str, Any] = {
        "seed": 3,
        "rounds": 3,
        "data": {"num_clients": 12, "partition": "iid"},
        "model": {"name": "logreg", "framework": "numpy"},
        # One batch per client: every update takes as long, so K = C = cohort has no staleness.
        "training": {"clients_per_round": 4, "local_epochs": 1, "batch_size": 10_000, "lr": 0.3},
        "strategy": {"name": "fedavg"},
        "secagg": {"enabled": True},
    }
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value}
    return from_dict(raw)


def test_a_secure_buffer_of_the_whole_cohort_is_the_synchronous_secure_round_to_the_rounding() -> None:
    sync = execute(build(_small()))
    fed = build(_small(**{"async": {"enabled": True, "buffer_size": 4, "concurrency": 4}}))
    (secure,) = [t for t in fed.pipeline.transforms if isinstance(t, SecureAggregation)]
    buffered = execute(fed)
    assert [r.participants for r in buffered.history] == [r.participants for r in sync.history] == [4, 4, 4]
    assert all(r.extra["staleness_max"] == 0 and r.extra["secagg_k"] == 3 for r in buffered.history)
    # Both sum the same clients' terms; only the stochastic rounding differs (a few units of 1/scale each).
    for a, b in zip(sync.state.params, buffered.state.params, strict=True):
        np.testing.assert_allclose(a, b, atol=3 * 4 * 8 * secure.max_weight / secure.scale)


def test_sessions_that_keep_aborting_end_the_run_in_one_line() -> None:
    exp = _small(
        secagg={"simulate_dropout": 0.75, "dropout_stage": "share"},
        **{"async": {"enabled": True, "buffer_size": 4, "concurrency": 4}},
    )
    with pytest.raises(AggregationError, match="secure sessions in a row aborted") as info:
        execute(build(exp))
    assert "\n" not in str(info.value)
