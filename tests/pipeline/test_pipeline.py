"""The update pipeline: forward on the client, reversed on the server and on the sums."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedge.core.params import Params, ParamSpec
from fedge.core.types import ClientContext, ClientUpdate
from fedge.pipeline import Downlink, Pipeline, RoundContext, Transform
from fedge.strategies.aggregate import Terms


class Tagged(Transform):
    """Appends its name to a trail at every hook, and changes the values so that order matters."""

    def __init__(self, name: str, trail: list[str], scale: float) -> None:
        self.name = name
        self.trail = trail
        self.scale = scale

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        self.trail.append(f"client:{self.name}")
        update.delta = [d * self.scale + 1.0 for d in update.delta]
        return update

    def server(self, update: ClientUpdate, rctx: RoundContext) -> ClientUpdate:
        self.trail.append(f"server:{self.name}")
        update.delta = [(d - 1.0) / self.scale for d in update.delta]
        return update

    def aggregate(self, sums: Terms, rctx: RoundContext) -> Terms:
        self.trail.append(f"aggregate:{self.name}")
        return {k: [v * self.scale for v in vs] for k, vs in sums.items()}

    def downlink(self, params: Params, client_ids: Sequence[int], rctx: RoundContext) -> Downlink | None:
        self.trail.append(f"downlink:{self.name}")
        return Downlink([p + self.scale for p in params], {cid: 4 for cid in client_ids})


def rctx() -> RoundContext:
    return RoundContext(round_num=1, rng=np.random.default_rng(0), spec=ParamSpec.of([np.zeros(3)]), num_sampled=2)


def update() -> ClientUpdate:
    return ClientUpdate(client_id=0, delta=[np.arange(3, dtype=np.float64)], num_examples=5)


def test_client_runs_forward_and_server_undoes_in_reverse() -> None:
    trail: list[str] = []
    pipe = Pipeline([Tagged("a", trail, 2.0), Tagged("b", trail, 3.0)])
    ctx = ClientContext(client_id=0, round_num=1, rng=np.random.default_rng(0))
    encoded = pipe.client(update(), ctx)
    # a then b: ((x * 2 + 1) * 3 + 1); undone only by b's inverse first, then a's.
    np.testing.assert_allclose(encoded.delta[0], (np.arange(3) * 2 + 1) * 3 + 1)
    decoded = pipe.server(encoded, rctx())
    np.testing.assert_allclose(decoded.delta[0], np.arange(3))
    assert trail == ["client:a", "client:b", "server:b", "server:a"]


def test_aggregate_hooks_run_in_reverse_and_downlink_in_order() -> None:
    trail: list[str] = []
    pipe = Pipeline([Tagged("a", trail, 2.0), Tagged("b", trail, 3.0)])
    sums = pipe.aggregate({"w": [np.ones(3)]}, rctx())
    np.testing.assert_allclose(sums["w"][0], np.full(3, 6.0))
    down = pipe.downlink([np.zeros(3)], [0, 1], rctx())
    assert down is not None
    np.testing.assert_allclose(down.params[0], np.full(3, 5.0))  # a's +2 then b's +3 on a's result
    assert down.bytes_per_client == {0: 4, 1: 4}
    assert trail == ["aggregate:b", "aggregate:a", "downlink:a", "downlink:b"]


def test_an_empty_pipeline_is_the_identity_and_sends_the_plain_model() -> None:
    pipe = Pipeline()
    u = update()
    assert pipe.server(pipe.client(u, ClientContext(0, 1, np.random.default_rng(0))), rctx()) is u
    assert pipe.downlink([np.zeros(3)], [0], rctx()) is None
    sums = {"w": [np.ones(3)]}
    assert pipe.aggregate(sums, rctx()) is sums
