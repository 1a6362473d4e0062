"""Central DP at the top of a tree of ``fedge relay`` processes, over real gRPC on loopback.

Each child clips its own update (``privacy.clip_at = "client"``), its relay clips it again and
sums, and the cloud checks each relay's sum (one weight per child, L2 norm at most ``n C``),
adds the noise once and counts the round with its accountant as in a flat run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.config import from_dict
from fedge.core.errors import ConfigError, ValidationError
from fedge.core.params import ParamSpec
from fedge.deploy.auth import RelayClaim
from fedge.deploy.config import DeployConfig
from fedge.deploy.relay import clipped_at_relay
from fedge.deploy.server import check_relay_privacy
from fedge.deploy.service import partial_from_tree
from fedge.deploy.transport import check_partial
from fedge.engine.aggregator import Reducer, Validator
from fedge.federation import build, execute
from fedge.pipeline import Pipeline, RoundContext
from fedge.privacy.transforms import CentralDP
from fedge.strategies.fedavg import FedAvg

from .conftest import served_noise_key, simulated_with_noise_key
from .test_relay import RAW, close_to, keyring, pub, tree, two_relays

pytestmark = pytest.mark.integration

PRIVATE: dict[str, Any] = {
    **RAW,
    "strategy": {"name": "fedavg", "weighting": "uniform"},
    "privacy": {"mode": "central", "clip_at": "client", "clip_norm": 0.05, "noise_multiplier": 0.8},
}


def test_central_dp_over_relays_equals_flat_dp_fedavg_and_its_epsilon(tmp_path: Path) -> None:
    """kappa1 = 1: the children's clipped updates summed by their relays, plus the cloud's noise, are
    the flat DP-FedAvg round (same clipping, the same draw from the server's secret noise key),
    and the accountant's epsilon is the flat run's round by round. The clip binds (0.05 is below
    the children's update norms)."""
    served = two_relays(tmp_path, PRIVATE)
    sim = simulated_with_noise_key(from_dict(PRIVATE), served_noise_key(served))
    assert [(r.participants, r.failed) for r in served.history] == [(4, 0)] * 3
    close_to(served.result.state.params, sim.state.params)
    # The noise is the server's secret: not the one a node could draw from the seed it was sent.
    seeded = execute(build(from_dict(PRIVATE)))
    assert max(float(np.abs(a - b).max()) for a, b in zip(seeded.state.params, sim.state.params, strict=True)) > 1e-3
    eps = [r.extra["epsilon"] for r in served.history]
    np.testing.assert_allclose(eps, [r.extra["epsilon"] for r in sim.history], rtol=1e-9)
    assert eps == sorted(eps) and eps[0] > 0
    # The clip binds: round 1's plain mean delta is longer than C, so some child's delta is too.
    plain = build(from_dict({**PRIVATE, "rounds": 1, "privacy": {"mode": "off"}}))
    moved = [a - b for a, b in zip(execute(plain).state.params, plain.initial, strict=True)]
    assert float(np.sqrt(sum(np.sum(m.astype(np.float64) ** 2) for m in moved))) > 0.05


def private_reducer(clip_at: str = "client", adaptive: bool = False) -> Reducer:
    from fedge.privacy.transforms import AdaptiveClipping

    spec = ParamSpec(((3, 2),))
    rctx = RoundContext(round_num=1, rng=np.random.default_rng(0), spec=spec, num_sampled=2)
    dp = CentralDP(
        clip_norm=1.0,
        noise_multiplier=1.0,
        expected_clients=2.0,
        clip_at=clip_at,
        adaptive=AdaptiveClipping() if adaptive else None,
    )
    return Reducer(FedAvg(weighting="uniform"), Pipeline([dp]), rctx, Validator(spec))


def dp_tree(ids: list[int], delta: float, w: float) -> Any:
    t = tree(ids, n=10, w=w)
    t["terms"]["delta"] = [np.full((3, 2), delta)]
    return partial_from_tree(t, frozenset(ids), RelayClaim(2))


def test_the_cloud_checks_a_relays_sum_against_its_clipped_children() -> None:
    """Two clipped children sum to a norm of at most 2 C and weigh exactly 2 (uniform weighting)."""
    reducer = private_reducer()
    check_partial(dp_tree([0, 1], 2.0 / np.sqrt(6) * 0.999, 2.0), reducer)  # norm 1.998 <= 2 C
    with pytest.raises(ValidationError, match="L2 norm"):
        check_partial(dp_tree([0, 1], 2.0 / np.sqrt(6) * 1.01, 2.0), reducer)
    with pytest.raises(ValidationError, match="not one per client"):
        check_partial(dp_tree([0, 1], 0.1, 1.0), reducer)
    with pytest.raises(ValidationError, match="clip_at = 'client'"):
        check_partial(dp_tree([0, 1], 0.1, 2.0), private_reducer(clip_at="server"))
    with pytest.raises(ValidationError, match="adaptive_clip"):
        check_partial(dp_tree([0, 1], 0.1, 2.0), private_reducer(adaptive=True))


def test_a_relay_clips_each_childs_update_again() -> None:
    """The relay's pipeline clips on its side (a child that skipped its clipping is clipped there)."""
    from fedge.core.types import ClientUpdate

    spec = ParamSpec(((3, 2),))
    rctx = RoundContext(round_num=1, rng=np.random.default_rng(0), spec=spec, num_sampled=1)
    child = Pipeline([CentralDP(clip_norm=0.5, noise_multiplier=1.0, expected_clients=2.0, clip_at="client")])
    relay = clipped_at_relay(child)
    big = ClientUpdate(client_id=0, delta=[np.full((3, 2), 3.0, np.float32)], num_examples=5)
    out = relay.server(big, rctx)
    assert float(np.sqrt(sum(np.sum(d.astype(np.float64) ** 2) for d in out.delta))) <= 0.5
    assert child.server(ClientUpdate(0, [np.full((3, 2), 3.0, np.float32)], 5), rctx).delta[0][0, 0] == 3.0
    assert clipped_at_relay(Pipeline([])).transforms == []


def test_a_cloud_whose_allow_list_has_relays_refuses_dp_it_cannot_apply(tmp_path: Path) -> None:
    keys = keyring(tmp_path, ["r0", "d0"])
    allow = tmp_path / "allow.txt"
    allow.write_text(pub(keys["r0"], "relay=2"))
    cfg = DeployConfig(allow_list=str(allow))
    server_clip = {**PRIVATE, "privacy": {**PRIVATE["privacy"], "clip_at": "server"}}
    with pytest.raises(ConfigError, match="clip_at = 'client'"):
        check_relay_privacy(from_dict(server_clip), cfg)
    adaptive = {**PRIVATE, "privacy": {**PRIVATE["privacy"], "adaptive_clip": True}}
    with pytest.raises(ConfigError, match="adaptive_clip"):
        check_relay_privacy(from_dict(adaptive), cfg)
    check_relay_privacy(from_dict(PRIVATE), cfg)
    allow.write_text(pub(keys["d0"]))  # no relay: the flat rules apply
    check_relay_privacy(from_dict(server_clip), cfg)
