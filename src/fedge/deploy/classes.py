"""Model classes of a served round: which part of the global model each node is sent.

A strategy whose clients do not all hold the whole model (``per_client_models``: FedPer's
and FedRep's shared body, HeteroFL's sub-model of a width ratio) names what each client needs
with ``downlink_spec`` and what it sends back with ``update_spec``. The server groups the
round's clients by those shapes: one *class* per distinct pair, whose task is serialised
once and sent to every node of the class (HeteroFL: one per width ratio, however many nodes
hold it). Every other strategy has one class, the whole model, and keeps the shared path.

A node rebuilds the whole model from its class's blocks with :func:`embed`: the leading
corner of each tensor comes from the server, the rest from the model's initial parameters
(FedPer's head before the node trained its own; the entries HeteroFL's narrow node never
reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedge.core.params import Params, ParamSpec
from fedge.strategies.aggregate import corner
from fedge.strategies.base import Strategy

View = dict[str, float | str]
"""What a node of a class is told about the model it holds (HeteroFL: its width ratio)."""


@dataclass(frozen=True)
class ModelClass:
    """The clients of a round that get the same part of the model, and that part."""

    client_ids: tuple[int, ...]
    params: Params = field(repr=False)
    """The blocks sent (shapes ``downlink_spec``)."""
    spec: ParamSpec
    """The shapes each of their updates must have (``update_spec``)."""
    view: View


def blocks(params: Params, shapes: Sequence[tuple[int, ...]]) -> Params:
    """The leading-corner block of each tensor of ``params`` (a copy); an empty shape sends nothing."""
    out: Params = []
    for p, s in zip(params, shapes, strict=True):
        if int(np.prod(s)) == 0:
            out.append(np.zeros(s, dtype=np.float32))
        else:
            out.append(np.array(p[corner(s)], dtype=np.float32, copy=True))
    return out


def model_classes(strategy: Strategy, params: Params, client_ids: Sequence[int]) -> list[ModelClass] | None:
    """The round's classes in order of their first client; None when every client gets the whole model."""
    if not strategy.per_client_models:
        return None
    spec = ParamSpec.of(params)
    groups: dict[tuple[object, ...], list[int]] = {}
    for cid in client_ids:
        view = strategy.client_view(int(cid))
        key = (
            strategy.downlink_spec(spec, int(cid)).shapes,
            strategy.update_spec(spec, int(cid)).shapes,
            tuple(sorted(view.items())),
        )
        groups.setdefault(key, []).append(int(cid))
    out = []
    for ids in groups.values():
        first = ids[0]
        sent = blocks(params, strategy.downlink_spec(spec, first).shapes)
        out.append(ModelClass(tuple(ids), sent, strategy.update_spec(spec, first), strategy.client_view(first)))
    return out


def embed(template: Params, received: Params) -> Params:
    """The whole model: ``template`` with each received block written over its leading corner."""
    if len(template) != len(received):
        raise ValueError(f"the task holds {len(received)} tensors, the model has {len(template)}")
    out: Params = []
    for t, r in zip(template, received, strict=True):
        whole = np.array(t, dtype=np.float32, copy=True)
        if r.size:
            if r.ndim != whole.ndim or any(a > b for a, b in zip(r.shape, whole.shape, strict=True)):
                raise ValueError(f"a block of shape {r.shape} does not fit a tensor of shape {whole.shape}")
            whole[corner(r.shape)] = r
        out.append(whole)
    return out
