"""The privacy transforms in the pipeline: where clipping happens, the noise, the reports."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.core.errors import ConfigError
from fedge.core.params import ParamSpec, l2_norm
from fedge.core.types import ClientContext, ClientUpdate
from fedge.pipeline import Pipeline, RoundContext
from fedge.privacy.accountant import Accountant
from fedge.privacy.transforms import UNCLIPPED, AdaptiveClipping, CentralDP, LocalDP
from fedge.strategies.aggregate import Accumulator
from fedge.strategies.base import Strategy

SPEC = ParamSpec(((3,), (2, 2)))


def _update(cid: int, scale: float) -> ClientUpdate:
    rng = np.random.default_rng(cid)
    return ClientUpdate(cid, [rng.normal(0, scale, s).astype(np.float32) for s in SPEC.shapes], 5)


def _rctx(round_num: int = 1, seed: int = 0) -> RoundContext:
    return RoundContext(round_num, np.random.default_rng(seed), SPEC, num_sampled=4)


@pytest.mark.parametrize("clip_at", ["client", "server"])
def test_the_server_never_sums_an_update_above_c(clip_at: str) -> None:
    dp = CentralDP(clip_norm=0.5, noise_multiplier=1.0, expected_clients=4, clip_at=clip_at)
    pipe, rctx = Pipeline([dp]), _rctx()
    for cid in range(4):
        up = pipe.client(_update(cid, 10.0), ClientContext(cid, 1, np.random.default_rng(cid)))
        assert (l2_norm(up.delta) <= 0.5) == (clip_at == "client")
        up = pipe.server(up, rctx)
        assert l2_norm(up.delta) <= 0.5 and up.metrics[UNCLIPPED] == 0.0


def test_noise_has_stddev_z_c_and_the_mean_divides_by_expected_clients() -> None:
    spec = ParamSpec(((200_000,),))
    dp = CentralDP(clip_norm=2.0, noise_multiplier=1.5, expected_clients=10)
    sums = {"delta": [np.zeros(200_000)], "weight": [np.asarray([7.0])]}
    out = dp.aggregate(sums, RoundContext(1, np.random.default_rng(0), spec, num_sampled=7))
    assert float(out["weight"][0][0]) == 10.0
    assert float(np.std(out["delta"][0])) == pytest.approx(3.0, rel=0.01)
    mean = Strategy.mean_delta(out)[0]
    assert float(np.std(mean)) == pytest.approx(1.5 * 2.0 / 10, rel=0.01)


def test_aggregate_reports_epsilon_and_the_sampling_assumption() -> None:
    acc = Accountant("rdp", "poisson", 100, 10)
    dp = CentralDP(clip_norm=1.0, noise_multiplier=1.0, expected_clients=10, accountant=acc)
    rctx = _rctx()
    a = Accumulator()
    a.add(Strategy(weighting="uniform").contribution(_update(0, 0.1)))
    dp.aggregate(a.sums, rctx)
    assert rctx.info["sampling"] == "poisson" and rctx.info["sampling_rate"] == 0.1
    assert rctx.info["epsilon"] == pytest.approx(acc.epsilon(1e-5)) and rctx.info["epsilon"] > 0
    assert rctx.info["noise_multiplier"] == 1.0 and rctx.info["delta"] == 1e-5


def test_adaptive_clipping_follows_the_norms_with_noise_split() -> None:
    ada = AdaptiveClipping(target_quantile=0.5, lr=0.5, count_stddev=1.0)
    dp = CentralDP(clip_norm=100.0, noise_multiplier=1.0, expected_clients=8, adaptive=ada)
    assert dp.update_multiplier == pytest.approx((1 - 0.25) ** -0.5)
    for r in range(1, 30):
        rctx = _rctx(r, seed=r)
        a = Accumulator()
        for cid in range(8):
            a.add(Strategy(weighting="uniform").contribution(dp.server(_update(cid, 0.3), rctx)))
        dp.aggregate(a.sums, rctx)
    norms = sorted(l2_norm(_update(cid, 0.3).delta) for cid in range(8))
    assert norms[0] / 3 < dp.clip_norm < norms[-1] * 3


def test_central_dp_refuses_terms_it_cannot_bound() -> None:
    dp = CentralDP(clip_norm=1.0, noise_multiplier=1.0, expected_clients=4)
    with pytest.raises(ConfigError, match="cannot bound the sensitivity of terms"):
        dp.aggregate({"delta": [np.zeros(3)], "weight": [np.ones(1)], "c": [np.zeros(3)]}, _rctx())
    up = _update(0, 1.0)
    up.extras["c"] = up.delta
    with pytest.raises(ConfigError, match="extra tensors"):
        dp.server(up, _rctx())


@pytest.mark.parametrize(("mechanism", "order"), [("gaussian", 2), ("laplace", 1)])
def test_local_dp_clips_then_adds_noise_of_the_stated_scale(mechanism: str, order: int) -> None:
    ldp = LocalDP(mechanism, clip_norm=1.0, epsilon=4.0, delta=1e-5)
    big = ClientUpdate(0, [np.full(50_000, 5.0, dtype=np.float32)], 1)
    out = ldp.client(big, ClientContext(0, 1, np.random.default_rng(0)))
    noise_std = ldp.scale if mechanism == "gaussian" else ldp.scale * np.sqrt(2)
    assert float(np.std(out.delta[0])) == pytest.approx(noise_std, rel=0.02)
    assert abs(float(np.mean(out.delta[0]))) < 1.0 / 50_000 ** (1 / order) + 0.05
    rctx = _rctx()
    ldp.aggregate({}, rctx)
    assert rctx.info["local_mechanism"] == mechanism and rctx.info["local_epsilon"] == 4.0
    assert rctx.info["local_delta"] == (1e-5 if mechanism == "gaussian" else 0.0)
