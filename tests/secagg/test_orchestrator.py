"""The whole protocol in one process: exact sums under dropouts, aborts, uniformity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedge.secagg import graph
from fedge.secagg.messages import STAGES, MaskedInput, RoundSetup
from fedge.secagg.orchestrator import run_protocol
from fedge.secagg.server import SecAggAbort

N, D = 20, 64


def setup_for(n: int = N, d: int = D, *, k: int = 0, round_num: int = 4, bits: int = 32) -> RoundSetup:
    p = graph.choose_parameters(n, 0.3, k=k)
    return RoundSetup(round_num, tuple(range(10, 10 + n)), p.k, p.t, d, bits, graph_seed=99)


def inputs_for(setup: RoundSetup, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    dtype = np.uint32 if setup.bits == 32 else np.uint64
    return {c: rng.integers(0, np.iinfo(dtype).max, setup.length, dtype=dtype, endpoint=True) for c in setup.cohort}


def plain_sum(inputs: dict[int, np.ndarray], ids: list[int]) -> np.ndarray:
    total = np.zeros_like(next(iter(inputs.values())))
    for c in ids:
        total += inputs[c]
    return total


def tolerable_dropouts(setup: RoundSetup, m: int) -> set[int]:
    """``m`` clients whose loss leaves every neighbourhood at or above the threshold."""
    adj = setup.graph()
    gone: set[int] = set()
    for c in setup.cohort[1:]:
        if len(gone) == m:
            break
        if all(len(gone & set(adj[v])) < setup.k - setup.t for v in adj[c]):
            gone.add(c)
    assert len(gone) == m
    return gone


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("k", [10, 0], ids=["secagg+", "classic"])
def test_unmasked_sum_equals_plain_sum_exactly(stage: str, rate: float, k: int) -> None:
    setup = setup_for(k=k or N - 1)
    inputs = inputs_for(setup)
    gone = tolerable_dropouts(setup, round(rate * N))
    res = run_protocol(setup, inputs, drop={stage: gone})
    expected = set(setup.cohort) - (gone if stage != "unmask" else set())
    assert set(res.included) == expected
    assert np.array_equal(res.total, plain_sum(inputs, res.included))


def test_dropouts_at_every_stage_at_once_with_64_bit_words() -> None:
    setup = setup_for(bits=64, k=10)
    inputs = inputs_for(setup, seed=3)
    g = sorted(tolerable_dropouts(setup, 6))
    drop = {"advertise": {g[0]}, "share": {g[1], g[2]}, "masked_input": {g[3]}, "unmask": {g[4], g[5]}}
    res = run_protocol(setup, inputs, drop=drop)
    assert sorted(res.included) == sorted(set(setup.cohort) - set(g[:4]))
    assert np.array_equal(res.total, plain_sum(inputs, res.included))


@pytest.mark.parametrize("stage", STAGES)
def test_round_aborts_below_threshold(stage: str) -> None:
    setup = setup_for(k=N - 1)
    gone = set(setup.cohort[: N - setup.t + 1])
    with pytest.raises(SecAggAbort, match="threshold"):
        run_protocol(setup, inputs_for(setup), drop={stage: gone})


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 12), data=st.data())
def test_masks_cancel_for_any_cohort_and_dropout_pattern(n: int, data: st.DataObject) -> None:
    p = graph.choose_parameters(n, 0.0, k=n - 1)
    setup = RoundSetup(1, tuple(range(n)), p.k, p.t, 8, 32, graph_seed=data.draw(st.integers(0, 10**6)))
    late = data.draw(st.sets(st.sampled_from(setup.cohort), max_size=n - p.t - 1))
    inputs = inputs_for(setup, seed=n)
    res = run_protocol(setup, inputs, drop={"masked_input": late})
    assert np.array_equal(res.total, plain_sum(inputs, res.included))


def test_each_masked_vector_looks_uniform() -> None:
    setup = setup_for(d=4096, k=4)
    zeros = {c: np.zeros(setup.length, dtype=np.uint32) for c in setup.cohort}
    seen: list[np.ndarray] = []

    def watch(stage: str, msg: object) -> object:
        if isinstance(msg, MaskedInput):
            seen.append(msg.vector.copy())
        return msg

    res = run_protocol(setup, zeros, tamper=watch)
    assert len(seen) == N and not res.total.any()
    for v in seen:
        byte_counts = np.bincount(v.view(np.uint8), minlength=256)
        assert stats.chisquare(byte_counts).pvalue > 1e-6
        bits = np.unpackbits(v.view(np.uint8)).reshape(-1, 32).mean(axis=0)
        assert np.all(np.abs(bits - 0.5) < 0.05)


def test_wrong_length_vector_excludes_the_client_and_the_sum_stays_exact() -> None:
    setup = setup_for(k=4)
    inputs = inputs_for(setup)

    def truncate(stage: str, msg: object) -> object:
        if isinstance(msg, MaskedInput) and msg.client_id == 12:
            return MaskedInput(12, msg.round_num, msg.vector[:-1])
        return msg

    res = run_protocol(setup, inputs, tamper=truncate)
    assert 12 not in res.included and any("shape" in r for r in res.dropped)
    assert np.array_equal(res.total, plain_sum(inputs, res.included))


def test_bad_input_of_the_wrong_length_is_refused_by_the_client() -> None:
    setup = setup_for(k=4)
    inputs = inputs_for(setup)
    inputs[15] = inputs[15][:10]
    res = run_protocol(setup, inputs)
    assert 15 not in res.included
    assert np.array_equal(res.total, plain_sum(inputs, res.included))
