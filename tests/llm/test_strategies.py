from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import AggregationError
from fedge.core.types import ClientUpdate, TrainConfig
from fedge.llm.strategies import FlexLoRA, LoraFedAvg, factorise, lora_pairs, products, relative_error
from fedge.strategies import lookup
from fedge.strategies.aggregate import Accumulator


def adapter(rng: np.random.Generator, r: int, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    out = []
    for d_out, d_in in shapes:
        out += [rng.normal(size=(r, d_in)).astype(np.float32), rng.normal(size=(d_out, r)).astype(np.float32)]
    return out


def one_round(
    strategy: FlexLoRA | LoraFedAvg,
    global_params: list[np.ndarray],
    locals_: list[list[np.ndarray]],
    weights: list[int],
):
    state = strategy.init(global_params, num_clients=len(locals_))
    strategy.configure(state, 1, TrainConfig())
    acc = Accumulator()
    for cid, (local, w) in enumerate(zip(locals_, weights, strict=True)):
        delta = [a - g for a, g in zip(local, global_params, strict=True)]
        acc.add(strategy.contribution(ClientUpdate(client_id=cid, delta=delta, num_examples=w)))
    return strategy.aggregate(state, acc.sums)


def test_registered_by_name() -> None:
    assert lookup("lora-fedavg") is LoraFedAvg and lookup("flexlora") is FlexLoRA


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 5), st.lists(st.integers(1, 9), min_size=1, max_size=4))
def test_flexlora_is_the_exact_weighted_mean_of_products_at_full_rank(seed: int, d: int, ws: list[int]) -> None:
    rng = np.random.default_rng(seed)
    shapes = [(d, d), (d + 1, d)]
    g = adapter(rng, d, shapes)
    locals_ = [adapter(rng, d, shapes) for _ in ws]
    new, metrics = one_round(FlexLoRA(), g, locals_, ws)
    pairs = lora_pairs([p.shape for p in g])
    exact = [
        sum(w * p for w, p in zip(ws, ps, strict=True)) / sum(ws)
        for ps in zip(*[products(loc, pairs) for loc in locals_], strict=True)
    ]
    got = products(new.params, pairs)
    for e, x in zip(exact, got, strict=True):
        np.testing.assert_allclose(x, e, rtol=1e-4, atol=1e-4)
    assert metrics["truncation_error"] < 1e-5
    assert new.params[0].dtype == np.float32 and new.round_num == 1


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 4))
def test_factorise_is_the_best_rank_r_approximation(seed: int, r: int) -> None:
    m = np.random.default_rng(seed).normal(size=(7, 6))
    b, a = factorise(m, r)
    assert b.shape == (7, r) and a.shape == (r, 6)
    s = np.linalg.svd(m, compute_uv=False)
    np.testing.assert_allclose(np.linalg.norm(m - b @ a), np.sqrt(np.sum(s[r:] ** 2)), atol=1e-9)


def test_fedavg_of_factors_misses_the_product_and_says_by_how_much() -> None:
    rng = np.random.default_rng(0)
    g = adapter(rng, 2, [(4, 3)])
    locals_ = [adapter(rng, 2, [(4, 3)]) for _ in range(3)]
    new, metrics = one_round(LoraFedAvg(), g, locals_, [1, 2, 3])
    for i in range(2):
        expected = sum(w * loc[i] for w, loc in zip([1, 2, 3], locals_, strict=True)) / 6
        np.testing.assert_allclose(new.params[i], expected, rtol=1e-5)
    mean_prod = sum(w * products(loc, [(0, 1)])[0] for w, loc in zip([1, 2, 3], locals_, strict=True)) / 6
    gap = relative_error([mean_prod], products(new.params, [(0, 1)]))
    assert metrics["product_gap"] == pytest.approx(gap) and gap > 0.01
    _, same = one_round(LoraFedAvg(), g, [locals_[0]] * 3, [1, 2, 3])
    assert same["product_gap"] < 1e-6


def test_rank_deficient_product_keeps_rank_and_flags_truncation() -> None:
    rng = np.random.default_rng(1)
    g = adapter(rng, 1, [(5, 5)])
    new, metrics = one_round(FlexLoRA(), g, [adapter(rng, 1, [(5, 5)]) for _ in range(3)], [1, 1, 1])
    assert [p.shape for p in new.params] == [(1, 5), (5, 1)]
    assert 0 < metrics["truncation_error"] < 1


def test_tensors_that_are_not_lora_pairs_are_refused() -> None:
    with pytest.raises(AggregationError, match="not a LoRA pair"):
        lora_pairs([(2, 3), (4, 3)])
    with pytest.raises(AggregationError, match="even"):
        FlexLoRA().init([np.zeros((2, 3), np.float32)], num_clients=1)
