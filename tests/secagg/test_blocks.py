"""A relay's block as one participant of a secure aggregation session (in process, real cryptography).

A block of ``N`` clients is encoded as one input clipped to ``N`` times the per-update range and
counts as ``N`` clients against the cohort the fixed-point scale was sized for, so the ring total
of blocks at their extremes decodes without wrapping; the total's weight is bounded by what the
participants claimed in clear.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedge.core.params import ParamSpec
from fedge.core.types import ClientUpdate
from fedge.engine.aggregator import BLOCK_KEY, PartialSum
from fedge.pipeline import RoundContext
from fedge.secagg import SecAggAbort, SecAggConfig, SecureAggregation
from fedge.secagg.messages import RoundSetup
from fedge.secagg.orchestrator import LocalClients
from fedge.strategies import FedAvg

SPEC = ParamSpec(((3,),))
MAX_WEIGHT = 100.0


def secagg(max_cohort: int) -> SecureAggregation:
    return SecureAggregation(
        SecAggConfig(enabled=True, clip=1.0, max_weight=MAX_WEIGHT), FedAvg(), max_cohort=max_cohort
    )


def block(pid: int, ids: list[int], examples: int) -> ClientUpdate:
    return PartialSum({}, ids, examples, masked_by=pid).participant()


def terms(value: float, weight: float) -> dict[str, list[np.ndarray]]:
    return {"delta": [np.full(3, value)], "weight": [np.asarray([weight])]}


def session(sa: SecureAggregation, updates: list[ClientUpdate], words: dict[int, np.ndarray]) -> tuple:
    rctx = RoundContext(round_num=1, rng=np.random.default_rng(0), spec=SPEC, num_sampled=len(updates))
    exchange = LocalClients(RoundSetup(1, (), 0, 0, 0), words, None)
    return sa.sum_cohort(updates, rctx, exchange)


def test_blocks_at_their_extremes_sum_without_wrapping_and_count_as_their_clients() -> None:
    """Blocks of 4 and 2 clients at +N x range in every value, in a ring sized for 6 clients: the total
    reaches the ring's signed limit but decodes to their exact sum (to the fixed-point step); a block's
    value past its reach is clipped to it; the round counts 6 clients."""
    sa = secagg(6)
    rng = np.random.default_rng(1)
    words = {
        0: sa.encode_block(terms(4 * MAX_WEIGHT, 400.0), 4, rng),
        4: sa.encode_block(terms(20 * MAX_WEIGHT, 200.0), 2, rng),  # ten times past its reach: clipped to 2
    }
    got, count, lost = session(sa, [block(0, [0, 1, 2, 3], 400), block(4, [4, 5], 200)], words)
    assert count == 6 and lost == {}
    assert 6 * sa.scale > 0.99 * 2**31  # the ring is nearly full: a wrap would flip the sign
    step = 2 * MAX_WEIGHT / sa.scale
    np.testing.assert_allclose(got["delta"][0], np.full(3, 6 * MAX_WEIGHT), atol=step)
    np.testing.assert_allclose(got["weight"][0], [600.0], atol=step)


def test_blocks_beyond_the_cohort_abort_before_anything_is_sent() -> None:
    sa = secagg(5)
    with pytest.raises(SecAggAbort, match="6 clients exceed the 5"):
        session(sa, [block(0, [0, 1, 2, 3], 400), block(4, [4, 5], 200)], {})


def test_a_total_heavier_than_its_participants_claims_aborts_the_round() -> None:
    """A block claims 10 examples in clear but masks a weight of 300: no input can be checked, the total can."""
    sa = secagg(6)
    rng = np.random.default_rng(2)
    words = {0: sa.encode_block(terms(1.0, 300.0), 3, rng), 3: sa.encode_block(terms(1.0, 20.0), 3, rng)}
    with pytest.raises(SecAggAbort, match=r"weighs 320, outside the 0\.\.30 "):
        session(sa, [block(0, [0, 1, 2], 10), block(3, [3, 4, 5], 20)], words)
    honest = {0: sa.encode_block(terms(1.0, 10.0), 3, rng), 3: words[3]}
    got, count, _ = session(sa, [block(0, [0, 1, 2], 10), block(3, [3, 4, 5], 20)], honest)
    assert count == 6 and abs(float(got["weight"][0][0]) - 30.0) < 1e-3


def test_a_participant_holds_its_block_and_examples() -> None:
    u = block(7, [7, 8], 33)
    assert (u.client_id, u.delta, u.num_examples, u.payload) == (7, [], 33, {BLOCK_KEY: [7, 8]})
