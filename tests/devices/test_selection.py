import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.devices.selection import Oort, select_fastest, select_uniform, select_weighted


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 70), seed=st.integers(0, 1000))
def test_selections_pick_distinct_available_clients(n, k, seed):
    avail = list(range(0, 2 * n, 2))
    rng = np.random.default_rng(seed)
    sizes = np.arange(2 * n) + 1
    times = {c: float((c * 7) % 11) for c in avail}
    for sel in (
        select_uniform(avail, k, rng),
        select_weighted(avail, k, sizes, rng),
        select_fastest(avail, k, times),
        Oort().select(1, avail, k, times, rng),
    ):
        assert len(sel) == min(k, n) == len(set(sel))
        assert set(sel) <= set(avail)


def test_fastest_takes_the_quickest():
    assert select_fastest([1, 2, 3, 4], 2, {1: 5.0, 2: 1.0, 3: 9.0, 4: 0.5}) == [2, 4]


def test_weighted_prefers_big_clients():
    rng = np.random.default_rng(0)
    sizes = np.array([1, 1000] * 50)
    picks = np.concatenate([select_weighted(list(range(100)), 5, sizes, rng) for _ in range(50)])
    assert np.mean(picks % 2 == 1) > 0.9


def test_oort_exploits_useful_fast_clients_and_penalises_slow_ones():
    oort = Oort(exploration=0.0, min_exploration=0.0, preferred_s=10.0)
    # clients 0-9: high loss and fast; 10-19: high loss but 10x slower than T; 20-29: low loss, fast
    obs = {c: (50.0, 2.0, 5.0) for c in range(10)}
    obs |= {c: (50.0, 2.0, 100.0) for c in range(10, 20)}
    obs |= {c: (50.0, 0.1, 5.0) for c in range(20, 30)}
    oort.observe(1, obs)
    rng = np.random.default_rng(0)
    times = {c: 1.0 for c in range(30)}
    picks = np.concatenate([oort.select(2, list(range(30)), 5, times, rng) for _ in range(20)])
    assert np.mean(picks < 10) > 0.9


def test_oort_explores_unseen_clients_and_prefers_fast_ones():
    oort = Oort(exploration=1.0, min_exploration=1.0)
    rng = np.random.default_rng(1)
    times = {c: (1.0 if c < 50 else 100.0) for c in range(100)}
    picks = np.concatenate([oort.select(1, list(range(100)), 10, times, rng) for _ in range(20)])
    assert np.mean(picks < 50) > 0.9


def test_oort_staleness_raises_old_clients():
    oort = Oort(preferred_s=100.0)
    oort.observe(1, {0: (10.0, 1.0, 1.0)})
    oort.observe(50, {1: (10.0, 1.0, 1.0)})
    assert oort.utility(0, 60, 10.0, 100.0) > oort.utility(1, 60, 10.0, 100.0)


def test_pacer_relaxes_when_utility_falls():
    oort = Oort(pacer_window=2)
    for r, loss in enumerate([4.0, 4.0, 1.0, 1.0], start=1):
        oort.observe(r, {0: (10.0, loss, float(r))})
    assert oort.pacer > 0.3
