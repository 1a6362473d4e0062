"""Structured pruning: the pruned model computes what the original does with units removed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedge.core.errors import ModelError
from fedge.export.prune import count_params, prune, unit_norms
from fedge.models import torch_module


def _masked(module: nn.Sequential, kept: dict[int, list[int]]) -> nn.Sequential:
    """The original model with every removed unit's weights and bias set to zero."""
    import copy

    out = copy.deepcopy(module)
    with torch.no_grad():
        for i, keep in kept.items():
            layer = out[i]
            drop = torch.ones(layer.weight.shape[0], dtype=torch.bool)
            drop[keep] = False
            layer.weight[drop] = 0
            layer.bias[drop] = 0
    return out


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from([0.1, 0.25, 0.5, 0.8]),
    st.sampled_from(["l1", "l2"]),
    st.integers(0, 1000),
    st.sampled_from([[8], [12, 6], [5, 9, 4]]),
)
def test_pruned_mlp_equals_the_original_with_units_removed(
    ratio: float, norm: str, seed: int, hidden: list[int]
) -> None:
    torch.manual_seed(seed)
    module = torch_module("mlp", (7,), 3, hidden)
    res = prune(module, ratio, norm)
    assert res.widths() == [max(1, round(h * (1 - ratio))) for h in hidden]
    x = torch.randn(11, 7)
    with torch.no_grad():
        np.testing.assert_allclose(res.module(x).numpy(), _masked(module, res.kept)(x).numpy(), rtol=1e-5, atol=1e-6)
    prev: list[int] | None = None
    for i in sorted(res.kept):
        keep = res.kept[i]
        w = module[i].weight.detach().numpy()
        norms = unit_norms(w if prev is None else w[:, prev], norm)
        prev = keep
        dropped = np.setdiff1d(np.arange(len(norms)), keep)
        if dropped.size:
            assert norms[dropped].max() <= norms[keep].min()
    assert count_params(res.module) < count_params(module)


def test_pruned_cnn_channels_carry_through_flatten() -> None:
    torch.manual_seed(0)
    module = torch_module("cnn", (64,), 10)
    res = prune(module, 0.5, "l2")
    assert sorted(len(k) for k in res.kept.values()) == [8, 16]
    x = torch.randn(4, 64)
    with torch.no_grad():
        np.testing.assert_allclose(res.module(x).numpy(), _masked(module, res.kept)(x).numpy(), rtol=1e-4, atol=1e-5)


def test_pruning_leaves_the_original_untouched() -> None:
    module = torch_module("mlp", (5,), 2, [6])
    before = [p.detach().clone() for p in module.parameters()]
    prune(module, 0.5)
    for a, b in zip(before, module.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "ratio, match",
    [
        (0.9, r"would remove the whole of layer 1 \(Linear\) \(all 4 units\)"),
        (1.0, r"must be in \[0, 1\)"),
        (-0.1, r"must be in \[0, 1\)"),
    ],
)
def test_ratio_that_empties_a_layer_is_refused(ratio: float, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        prune(torch_module("mlp", (5,), 2, [4]), ratio)


def test_a_model_without_hidden_layer_cannot_be_pruned() -> None:
    with pytest.raises(ModelError, match="no hidden layer"):
        prune(torch_module("logreg", (5,), 2), 0.5)
    with pytest.raises(ModelError, match="unknown pruning norm 'l3'"):
        prune(torch_module("mlp", (5,), 2, [4]), 0.5, "l3")
