"""The update pipeline: transforms applied to each update on the client, undone on the server.

A :class:`Transform` has three hooks, each the identity by default:

* ``client(update, ctx)`` — on the client, in pipeline order (clip, add noise,
  quantise, mask ...). It may replace ``update.delta`` with an encoded
  ``update.payload`` and must set ``update.uplink_bytes`` when it changes what travels.
* ``server(update, rctx)`` — on the server, for each arriving update, in reverse order
  (dequantise, ...).
* ``aggregate(sums, rctx)`` — on the server, on the round's summed terms, in reverse
  order (central DP noise, unmasking ...).
* ``downlink(params, client_ids, rctx)`` — on the server, before a round is sent, in
  pipeline order: may replace the model the clients start from (its compressed form)
  and count the bytes each client receives; ``None`` keeps the plain float32 broadcast.

Cross-cutting features are transforms, not strategy subclasses: any strategy composes
with any chain. A transform that sums the cohort itself over the transport (secure
aggregation) declares it by implementing :class:`fedge.transport.exchange.CohortSum`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedge.core.params import Params, ParamSpec
from fedge.core.types import ClientContext, ClientUpdate
from fedge.strategies.aggregate import Terms


@dataclass
class RoundContext:
    """Server-side context of one round, handed to transforms."""

    round_num: int
    rng: np.random.Generator
    spec: ParamSpec
    num_sampled: int
    info: dict[str, Any] = field(default_factory=dict)
    """Values transforms report for the round's history (e.g. ``epsilon``)."""


@dataclass
class Downlink:
    """What the server sends a round's clients: the model they start from, and its cost."""

    params: Params
    bytes_per_client: dict[int, int]


class Transform:
    """One step of the update pipeline; subclasses override the hooks they need."""

    name: str = "identity"

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        return update

    def server(self, update: ClientUpdate, rctx: RoundContext) -> ClientUpdate:
        return update

    def aggregate(self, sums: Terms, rctx: RoundContext) -> Terms:
        return sums

    def downlink(self, params: Params, client_ids: Sequence[int], rctx: RoundContext) -> Downlink | None:
        return None

    def state_dict(self) -> dict[str, Any] | None:
        """What of this transform's server-side state a checkpoint must keep (JSON-able), or None.

        A deployed run stores it with every round's checkpoint, so that ``--resume`` carries
        on exactly (the privacy accountant's rounds, an adaptive clipping bound).
        """
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    whole_model: bool = False
    """True for a transform that encodes or decodes an update against the whole model's shapes
    (compression codecs): strategies that send part of the model per client refuse it."""


class Pipeline:
    """An ordered chain of transforms: forward on the client, reversed on the server."""

    def __init__(self, transforms: Sequence[Transform] = ()) -> None:
        self.transforms = list(transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def named(self, name: str) -> list[Any]:
        """Its transforms called ``name`` (e.g. ``"central_dp"``), found without importing their part."""
        return [t for t in self.transforms if t.name == name]

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        for t in self.transforms:
            update = t.client(update, ctx)
        return update

    def server(self, update: ClientUpdate, rctx: RoundContext) -> ClientUpdate:
        for t in reversed(self.transforms):
            update = t.server(update, rctx)
        return update

    def aggregate(self, sums: Terms, rctx: RoundContext) -> Terms:
        for t in reversed(self.transforms):
            sums = t.aggregate(sums, rctx)
        return sums

    def downlink(self, params: Params, client_ids: Sequence[int], rctx: RoundContext) -> Downlink | None:
        result: Downlink | None = None
        for t in self.transforms:
            d = t.downlink(params if result is None else result.params, client_ids, rctx)
            if d is not None:
                result = d
        return result


__all__ = ["Downlink", "Pipeline", "RoundContext", "Transform"]
