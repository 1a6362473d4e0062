"""The bounds on one client's influence: capped example counts, median-relative norm clipping."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.params import l2_norm
from fedge.core.types import ClientUpdate
from fedge.strategies.aggregate import weighted_mean
from fedge.strategies.influence import InfluenceBound, InfluenceLimits, clip_scale, examples_cap


def update(cid: int, step: float, n: int, size: int = 4) -> ClientUpdate:
    return ClientUpdate(cid, [np.full(size, step, np.float32)], n, {"train_loss": 0.5})


def bounded(limits: InfluenceLimits, updates: list[ClientUpdate]) -> list[ClientUpdate]:
    """Observe the whole cohort first, then bound each update (a held-back first round)."""
    b = InfluenceBound(limits)
    b.start_round(len(updates))
    for u in updates:
        b.observe(u)
    info: dict[str, float] = {}
    return [b.apply(u, info) for u in updates]


def test_cap_and_clip_maths() -> None:
    assert examples_cap(10, 4.0) == 40 and examples_cap(0, 4.0) == 1 and examples_cap(2.5, 3.0) == 8
    assert clip_scale(2.0, 3.0) == 1.0 and clip_scale(0.0, 0.0) == 1.0 and clip_scale(8.0, 2.0) == 0.25


def test_a_huge_count_and_a_huge_delta_are_cut_to_the_cohorts_scale() -> None:
    cohort = [update(0, 0.01, 10), update(1, 0.02, 12), update(2, 0.03, 8), update(3, 1000.0, 10**15)]
    out = bounded(InfluenceLimits(examples_factor=4.0, norm_factor=3.0), cohort)
    assert [u.num_examples for u in out[:3]] == [10, 12, 8] and out[
        3
    ].num_examples == 4 * 11  # 4 x median(10, 12, 8, 10**15)
    median_norm = float(np.median([l2_norm(u.delta) for u in cohort]))
    assert l2_norm(out[3].delta) <= 3.0 * median_norm * (1 + 1e-6)
    assert all(o is u for o, u in zip(out[:3], cohort[:3], strict=True)), "honest updates pass unchanged"
    step = weighted_mean([u.delta for u in out], [u.num_examples for u in out])
    assert l2_norm(step) <= 3.0 * median_norm * (1 + 1e-6)


def test_a_zero_factor_turns_each_bound_off() -> None:
    cohort = [update(0, 0.01, 10), update(1, 0.01, 10), update(2, 5.0, 10**9)]
    out = bounded(InfluenceLimits(examples_factor=0.0, norm_factor=0.0), cohort)
    assert all(o is u for o, u in zip(out, cohort, strict=True))


def test_the_window_holds_each_recent_clients_latest_update_and_needs_three() -> None:
    b = InfluenceBound(InfluenceLimits(min_reference=3))
    b.start_round(2)
    for step in (1.0, 2.0, 3.0):
        b.observe(update(0, step, 10))
    assert not b.ready and b.norms == [6.0], "a client is one entry, its latest"
    b.observe(update(1, 1.0, 10))
    b.observe(update(2, 1.0, 10))
    assert b.ready and b.norms == [6.0, 2.0, 2.0]
    b.start_round(3)
    for cid in range(3, 8):
        b.observe(update(cid, float(cid), 10))
    assert list(b.latest) == [5, 6, 7], "one cohort of the most recent clients"


def test_two_clients_of_different_scales_are_never_clipped_across_rounds() -> None:
    b = InfluenceBound(InfluenceLimits())
    info: dict[str, float] = {}
    for order in ((0, 1), (1, 0), (0, 1), (1, 0)):
        b.start_round(2)
        for cid in order:
            u = update(cid, 10.0 if cid == 0 else 0.5, 10)
            b.observe(u)
            assert b.apply(u, info) is u
    assert "influence_clipped_updates" not in info


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-50, 50), st.integers(1, 10**15)),
        min_size=3,
        max_size=9,
    ),
    st.floats(1.0, 5.0),
)
def test_the_round_step_never_exceeds_the_norm_bound(parts: list[tuple[float, int]], factor: float) -> None:
    cohort = [update(i, s, n) for i, (s, n) in enumerate(parts)]
    out = bounded(InfluenceLimits(examples_factor=4.0, norm_factor=factor), cohort)
    weights = [u.num_examples for u in out]
    median_norm = float(np.median([l2_norm(u.delta) for u in cohort]))
    step = weighted_mean([u.delta for u in out], weights)
    assert l2_norm(step) <= factor * median_norm * (1 + 1e-5) + 1e-30
    median_n = float(np.median([u.num_examples for u in cohort]))
    assert max(weights) <= max(1, np.ceil(4.0 * median_n))


def round_of(b: InfluenceBound, updates: list[ClientUpdate]) -> dict[int, tuple[int, float]]:
    """One streamed round: each update observed then bounded on arrival; the bounded count and norm by client."""
    b.start_round(len(updates))
    out = {}
    for u in updates:
        b.observe(u)
        v = b.apply(u, {})
        out[u.client_id] = (v.num_examples, l2_norm(v.delta))
    return out


def test_once_the_window_is_full_a_rounds_bounds_do_not_depend_on_arrival_order() -> None:
    first = [update(0, 0.01, 10), update(1, 0.02, 12), update(2, 0.03, 8)]
    second = [update(0, 0.02, 10), update(1, 900.0, 10**15), update(2, 0.01, 9)]
    results = []
    for order in (second, second[::-1], [second[1], second[0], second[2]]):
        b = InfluenceBound(InfluenceLimits(examples_factor=4.0, norm_factor=3.0))
        round_of(b, first)
        results.append(round_of(b, order))
    assert results[0] == results[1] == results[2]
    assert results[0][1][0] == 4 * 10  # capped by the first round's median count


def test_the_window_survives_a_checkpoint_and_bounds_the_next_round_as_before() -> None:
    limits = InfluenceLimits(examples_factor=4.0, norm_factor=3.0)
    first = [update(0, 0.01, 10), update(1, 0.02, 12), update(2, 0.03, 8)]
    second = [update(0, 0.02, 10), update(1, 900.0, 10**15), update(2, 0.01, 9)]
    kept = InfluenceBound(limits)
    round_of(kept, first)
    resumed = InfluenceBound(limits)
    resumed.load_state_dict(kept.state_dict())
    assert round_of(resumed, second) == round_of(kept, second)
