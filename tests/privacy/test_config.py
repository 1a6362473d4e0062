"""The [privacy] section: combinations refused in one line, Poisson sampling, plug-in wiring."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from fedge.config.schema import from_dict, to_toml
from fedge.core.errors import ConfigError
from fedge.federation import build
from fedge.privacy.config import PoissonSampling, privacy_transforms
from fedge.privacy.transforms import CentralDP, LocalDP
from fedge.simulation.sampling import Sampling


def _exp(strategy: dict[str, Any] | None = None, **privacy: Any) -> Any:
    return from_dict(
        {
            "rounds": 2,
            "data": {"num_clients": 30},
            "model": {"name": "logreg", "framework": "numpy"},
            "training": {"clients_per_round": 6},
            "strategy": strategy or {"name": "fedavg", "weighting": "uniform"},
            "privacy": {"mode": "central", **privacy},
        }
    )


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ({"name": "fedavg"}, "needs strategy.weighting = 'uniform'"),
        ({"name": "scaffold", "weighting": "uniform"}, "cannot bound the sensitivity of strategy 'scaffold'"),
        ({"name": "krum", "weighting": "uniform"}, "cannot be combined with strategy 'krum'"),
    ],
)
def test_central_dp_refuses_strategies_with_unbounded_sensitivity(strategy: dict[str, Any], message: str) -> None:

    with pytest.raises(ConfigError, match=message):
        privacy_transforms(_exp(strategy))


@pytest.mark.parametrize(
    ("privacy", "message"),
    [
        ({"noise_multiplier": 0.0}, r"privacy\.noise_multiplier must be > 0"),
        ({"delta": 1.0}, r"privacy\.delta must be in \(0, 1\), got 1.0"),
        ({"accountant": "pld"}, "pld accountant supports poisson sampling only"),
        ({"mode": "local", "local_epsilon": 0.0}, r"privacy\.local_epsilon must be a positive finite"),
    ],
)
def test_bad_privacy_values_are_one_clear_error(privacy: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        privacy_transforms(_exp(**privacy))


def test_a_negative_epsilon_in_the_file_is_refused_by_the_schema() -> None:
    with pytest.raises(ConfigError, match=r"privacy\.target_epsilon: must be >= 0"):
        _exp(target_epsilon=-1.0)


def test_secure_aggregation_needs_client_side_clipping_and_fixed_clip() -> None:
    @dataclass
    class SecAgg:
        enabled: bool = True

    exp = _exp()
    exp.extensions["secagg"] = SecAgg()
    with pytest.raises(ConfigError, match="clip_at = 'client'"):
        privacy_transforms(exp)
    exp = _exp(clip_at="client", adaptive_clip=True)
    exp.extensions["secagg"] = SecAgg()
    with pytest.raises(ConfigError, match="adaptive_clip"):
        privacy_transforms(exp)
    exp = _exp(clip_at="client")
    exp.extensions["secagg"] = SecAgg()
    (dp,) = privacy_transforms(exp)
    assert isinstance(dp, CentralDP) and dp.clip_at == "client"


def test_build_puts_the_transform_in_the_pipeline_and_the_section_in_the_toml() -> None:
    built = build(_exp(clip_norm=0.7, noise_multiplier=2.0, sampling="poisson"))
    (dp,) = [t for t in built.pipeline.transforms if isinstance(t, CentralDP)]
    assert dp.clip_norm == 0.7 and dp.expected_clients == 6
    assert dp.accountant is not None and dp.accountant.sampling_rate == pytest.approx(0.2)
    assert "[privacy]" in to_toml(built.exp)
    local = build(_exp(mode="local", local_mechanism="laplace"))
    assert any(isinstance(t, LocalDP) for t in local.pipeline.transforms)
    assert not any(isinstance(t, CentralDP) for t in build(_exp(mode="off")).pipeline.transforms)


def test_poisson_sampling_selects_each_client_with_the_rate() -> None:
    policy = PoissonSampling(0.1)
    sizes = [len(policy.select(r, list(range(1000)), Sampling(), np.random.default_rng(r))) for r in range(200)]
    assert float(np.mean(sizes)) == pytest.approx(100, rel=0.03)
    assert len(set(sizes)) > 5
    with pytest.raises(ConfigError, match="rate"):
        PoissonSampling(0.0)


def test_client_side_clipping_composes_with_secure_aggregation() -> None:
    from fedge.federation import execute

    raw = {
        "rounds": 2,
        "data": {"num_clients": 30, "partition": "iid"},
        "model": {"name": "logreg", "framework": "numpy"},
        "training": {"clients_per_round": 8, "local_epochs": 1, "lr": 0.1},
        "strategy": {"name": "fedavg", "weighting": "uniform"},
        "secagg": {"enabled": True},
        "privacy": {"mode": "central", "clip_at": "client", "noise_multiplier": 1.0, "clip_norm": 0.5},
    }
    built = build(from_dict(raw))
    names = [type(t).__name__ for t in built.pipeline.transforms]
    assert names.index("CentralDP") < names.index("SecureAggregation")
    result = execute(built)
    assert [r.participants for r in result.history] == [8, 8]
    assert all(r.extra["epsilon"] > 0 for r in result.history)


def test_adaptive_client_side_clipping_and_local_dp_report_in_every_round() -> None:
    from fedge.federation import execute

    ada = execute(
        build(
            _exp(
                clip_at="client",
                adaptive_clip=True,
                clip_norm=50.0,
                clip_lr=0.5,
                target_quantile=0.0,
                noise_multiplier=2.0,
            )
        )
    )
    bounds = [r.extra["clip_norm"] for r in ada.history]
    assert bounds[0] == 50.0 and bounds[1] < 50.0
    assert bounds[1:] == [r.extra["next_clip_norm"] for r in ada.history.rounds[:-1]]
    local = execute(build(_exp(mode="local", local_mechanism="laplace", local_epsilon=2.0)))
    for r in local.history:
        assert r.extra["local_mechanism"] == "laplace" and r.extra["local_epsilon"] == 2.0
        assert r.extra["local_noise_scale"] == 2 * 1.0 / 2.0
