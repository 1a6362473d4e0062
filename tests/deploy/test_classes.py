"""Model classes of a served round: who gets which part of the model, and how a node rebuilds it."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.core.errors import ValidationError
from fedge.core.params import ParamSpec
from fedge.deploy.classes import blocks, embed, model_classes
from fedge.deploy.service import update_from_tree
from fedge.strategies import Ditto, FedAvg, FedRep, HeteroFL
from fedge.strategies.heterofl import width_shapes


def _mlp() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=s).astype(np.float32) for s in [(8, 6), (8,), (4, 8), (4,)]]


@pytest.mark.parametrize("strategy", [FedAvg(), Ditto()], ids=["fedavg", "ditto"])
def test_whole_model_strategies_have_no_classes(strategy: object) -> None:
    assert model_classes(strategy, _mlp(), [0, 1, 2]) is None  # type: ignore[arg-type]


def test_heterofl_clients_of_one_width_share_one_class_holding_their_blocks() -> None:
    params = _mlp()
    strategy = HeteroFL(widths={0: 1.0, 1: 0.5, 2: 0.5, 3: 0.25})
    classes = model_classes(strategy, params, [3, 0, 1, 2])
    assert classes is not None
    assert [c.client_ids for c in classes] == [(3,), (0,), (1, 2)]
    for c in classes:
        ratio = strategy.ratio(c.client_ids[0])
        shapes = width_shapes(ParamSpec.of(params).shapes, ratio)
        assert c.spec.shapes == shapes and ParamSpec.of(c.params).shapes == shapes
        assert c.view == {"width": ratio, "layout": "mlp"}
        for sent, whole in zip(c.params, params, strict=True):
            np.testing.assert_array_equal(sent, whole[tuple(slice(0, d) for d in sent.shape)])


def test_fedrep_sends_the_body_and_a_node_rebuilds_the_model_with_the_initial_head() -> None:
    trained, initial = _mlp(), [p + 1 for p in _mlp()]
    (only,) = model_classes(FedRep(), trained, [0, 1]) or []
    assert only.client_ids == (0, 1) and [p.size for p in only.params[2:]] == [0, 0]
    whole = embed(initial, only.params)
    for got, want in zip(whole, [*trained[:2], *initial[2:]], strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_node_refuses_blocks_that_do_not_fit_its_model() -> None:
    params = _mlp()
    with pytest.raises(ValueError, match="does not fit"):
        embed(blocks(params, [(4, 6), (4,), (4, 4), (4,)]), [np.zeros((9, 6), np.float32), *params[1:]])
    with pytest.raises(ValueError, match="tensors"):
        embed(params, params[:2])


def test_an_update_is_checked_against_its_class_shapes() -> None:
    params = _mlp()
    half = width_shapes(ParamSpec.of(params).shapes, 0.5)
    tree = {"delta": [np.zeros_like(p) for p in params], "num_examples": 3}
    with pytest.raises(ValidationError, match="tensor 0 has shape"):
        update_from_tree(tree, 1, ParamSpec(half))
    narrow = {"delta": [np.zeros(s, np.float32) for s in half], "num_examples": 3}
    assert update_from_tree(narrow, 1, ParamSpec(half)).num_examples == 3
