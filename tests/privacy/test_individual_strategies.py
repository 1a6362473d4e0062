"""Central DP never runs silently without its noise: strategies that aggregate individual updates are refused."""

from __future__ import annotations

import numpy as np
import pytest

import fedge
from fedge.core.errors import ConfigError
from fedge.privacy.accountant import Accountant
from fedge.privacy.transforms import CentralDP
from fedge.robust.strategies import Krum, Median


def clients() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(20, 4)).astype(np.float32), rng.integers(0, 2, 20)) for _ in range(5)]


@pytest.mark.parametrize("strategy", [Median, Krum])
def test_central_dp_with_an_individual_update_strategy_is_refused_before_round_one(strategy: type) -> None:
    from fedge.clients import NumpyLogReg

    dp = CentralDP(clip_norm=1.0, noise_multiplier=1.0, expected_clients=5, accountant=Accountant("rdp", "fixed", 5, 5))
    probe: list[int] = []

    class Probe(fedge.Callback):
        def on_round_end(self, record, state):  # type: ignore[no-untyped-def]
            probe.append(record.round)

    with pytest.raises(ConfigError, match=r"aggregates individual updates, so central_dp"):
        fedge.run(NumpyLogReg(4, 2), clients(), strategy=strategy(), transforms=[dp], rounds=2, callbacks=[Probe()])
    assert probe == [] and dp.accountant is not None and dp.accountant.rounds == 0
