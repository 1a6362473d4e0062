"""Secure aggregation inside fedge rounds: same model as the plain round, safe aborts."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.clients import LearnerClient, NumpyLogReg
from fedge.config.schema import Experiment
from fedge.core.errors import ConfigError
from fedge.data import synthetic
from fedge.engine import run
from fedge.pipeline import Pipeline
from fedge.secagg import SecAggConfig, SecureAggregation, build_transforms
from fedge.simulation import Sampling
from fedge.strategies import FedAvg
from fedge.transport import InProcessTransport

FD = synthetic(0.5, 0.5, num_clients=12, seed=0)
MODEL = NumpyLogReg(60, 10)


def client_fn(cid: int) -> LearnerClient:
    return LearnerClient(cid, MODEL, FD.client(cid))


def go(transforms=(), rounds: int = 2, strategy=None):
    strategy = strategy or FedAvg()
    pipe = Pipeline(list(transforms))
    tr = InProcessTransport(client_fn, FD.num_clients, strategy=strategy, pipeline=pipe, seed=0)
    return run(
        strategy=strategy,
        transport=tr,
        initial_params=MODEL.init_params(0),
        rounds=rounds,
        sampling=Sampling(count=10),
        pipeline=pipe,
        seed=0,
    )


def secagg(**kw) -> SecureAggregation:
    return SecureAggregation(SecAggConfig(enabled=True, **kw), FedAvg(), max_cohort=10)


def test_secure_rounds_give_the_plain_model_up_to_fixed_point_rounding() -> None:
    plain = go()
    secure = go([secagg(clip=4.0)])
    for a, b in zip(plain.state.params, secure.state.params, strict=True):
        assert np.allclose(a, b, atol=1e-5)
    assert not all(np.array_equal(a, b) for a, b in zip(plain.state.params, secure.state.params, strict=True))
    rec = secure.history.rounds[-1]
    assert rec.participants == 10 and rec.extra["secagg_k"] == 9
    assert rec.uplink_bytes <= 1.05 * 10 * sum(p.nbytes for p in plain.state.params)


def test_simulated_dropouts_are_reported_and_the_round_still_counts() -> None:
    res = go([secagg(clip=4.0, simulate_dropout=0.2, dropout_stage="masked_input")], rounds=1)
    rec = res.history.rounds[-1]
    assert rec.participants == 8
    assert sum(len(v) for k, v in rec.dropped.items() if k.startswith("secagg")) == 2


def test_an_aborted_round_leaves_the_global_model_unchanged() -> None:
    res = go([secagg(simulate_dropout=0.6, dropout_stage="share")], rounds=1)
    rec = res.history.rounds[-1]
    assert "aborted" in rec.extra["skipped"]
    for a, b in zip(res.state.params, MODEL.init_params(0), strict=True):
        assert np.array_equal(a, b)


def test_strategies_that_need_individual_updates_refuse_secure_aggregation() -> None:
    class Median(FedAvg):
        name = "median-like"
        needs_individual_updates = True

    with pytest.raises(ConfigError, match="needs individual updates"):
        SecureAggregation(SecAggConfig(enabled=True), Median(), max_cohort=10)
    with pytest.raises(ConfigError, match="needs individual updates"):
        go([secagg()], strategy=Median())


def test_config_section_builds_the_transform_and_rejects_bad_values() -> None:
    exp = Experiment()
    assert build_transforms(exp) == []
    exp.section("secagg").enabled = True
    (t,) = build_transforms(exp)
    assert isinstance(t, SecureAggregation) and t.max_cohort == exp.training.clients_per_round
    exp.section("secagg").scale = 1e12
    with pytest.raises(ConfigError, match="overflows"):
        build_transforms(exp)
    exp.section("secagg").scale = 0.0
    exp.section("secagg").threshold = 50
    with pytest.raises(ConfigError, match="threshold"):
        build_transforms(exp)
    exp.section("secagg").threshold = 0
    exp.section("compression").codec = "int8"
    with pytest.raises(ConfigError, match=r"compression\.codec"):
        build_transforms(exp)


@pytest.mark.integration
def test_digits_default_reaches_the_same_accuracy_with_secure_aggregation() -> None:
    from fedge.federation import build, execute

    acc = []
    for on in (False, True):
        exp = Experiment(rounds=4)
        exp.evaluation.every = 4
        exp.section("secagg").enabled = on
        acc.append(execute(build(exp)).history.final_accuracy)
    assert acc[0] > 0.2
    assert abs(acc[0] - acc[1]) <= 0.005


def test_uniform_weighting_is_encoded_at_full_precision() -> None:
    plain = go(strategy=FedAvg(weighting="uniform"))
    t = SecureAggregation(SecAggConfig(enabled=True, clip=4.0), FedAvg(weighting="uniform"), max_cohort=10)
    secure = go([t], strategy=FedAvg(weighting="uniform"))
    assert t.max_weight == 1.0
    for a, b in zip(plain.state.params, secure.state.params, strict=True):
        assert np.allclose(a, b, atol=1e-6)
