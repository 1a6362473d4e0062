"""One allowed node cannot replace the global model or set the round's train loss.

A real ``serve`` over loopback gRPC with four real nodes in threads: three honest ones and
one that reports ``num_examples = 10**15``, a delta of 1000 on every parameter and a
near-zero loss. With the default bounds its weight is capped at 10 x the median count and
its delta clipped to 3 x the median update norm, so the model moves by a few hundredths.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.clients.base import TrainResult
from fedge.config import from_dict
from fedge.config.schema import Experiment
from fedge.core.params import Params
from fedge.core.types import ClientContext, EvalResult, TrainConfig
from fedge.deploy.auth import Signer, load_private
from fedge.deploy.config import DeployConfig
from fedge.deploy.node import Backoff, Node

from .test_transport import serve_in_thread

HONEST = {0: 0.01, 1: 0.02, 2: 0.03}
ATTACKER, ATTACK_STEP, ATTACK_COUNT, ATTACK_LOSS = 3, 1000.0, 10**15, 1e-6
COUNT, LOSS = 10, 0.5


class StepClient:
    """Adds a fixed step to every parameter and reports a fixed count and loss."""

    def __init__(self, cid: int) -> None:
        self.client_id = cid
        self.step = HONEST.get(cid, ATTACK_STEP)
        self.count = COUNT if cid in HONEST else ATTACK_COUNT
        self.train_loss = LOSS if cid in HONEST else ATTACK_LOSS

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        return TrainResult([p + np.float32(self.step) for p in params], 1, self.train_loss, self.count)

    def loss(self, params: Params) -> float:
        return 0.0

    def evaluate(self, params: Params) -> EvalResult:
        return EvalResult(self.client_id, 1, 0.0, 1.0)


def factory(exp: Experiment, cid: int) -> StepClient:
    return StepClient(cid)


@pytest.mark.integration
def test_a_node_claiming_huge_counts_and_deltas_moves_the_model_only_within_the_bounds(
    tmp_path: Path, make_keys: Any
) -> None:
    keys, allow = make_keys(4)
    exp = from_dict(
        {
            "seed": 1,
            "rounds": 1,
            "data": {"num_clients": 4},
            "model": {"name": "logreg", "framework": "numpy"},
            "training": {"clients_per_round": 4},
            "deploy": {
                "port": 0,
                "state": str(tmp_path / "run.db"),
                "min_nodes": 4,
                "heartbeat_s": 0.2,
                "allow_list": str(allow),
                "insecure": True,
            },
        }
    )
    server, port, out = serve_in_thread(exp)
    nodes = [
        Node(
            f"127.0.0.1:{port}",
            Signer(load_private(k)),
            partition=i,
            client_factory=factory,
            backoff=Backoff(give_up_s=20),
            insecure=True,
        )
        for i, k in enumerate(keys)
    ]
    threads = [threading.Thread(target=n.run, daemon=True) for n in nodes]
    for t in threads:
        t.start()
    server.join(60)
    for n, t in zip(nodes, threads, strict=True):
        n.stop()
        t.join(10)
    served = out["served"]
    (record,) = served.history.rounds
    assert record.participants == 4
    moved = np.concatenate(
        [(a - b).ravel() for a, b in zip(served.result.state.params, served.built.initial, strict=True)]
    )
    # Every update is uniform, so the step is too. The attacker's delta is clipped to at most
    # norm_cap x the median norm (at most 3 x 0.03 per coordinate, whatever the arrival order)
    # and its weight to examples_cap x the median count (100): the step is at most
    # (10 x 0.06 + 100 x 0.09) / 130.
    ex, norm = DeployConfig().examples_cap, DeployConfig().norm_cap
    cap = (COUNT * sum(HONEST.values()) + ex * COUNT * norm * max(HONEST.values())) / (3 * COUNT + ex * COUNT)
    assert np.all(moved > 0) and float(np.max(np.abs(moved))) <= cap * (1 + 1e-4), float(np.max(np.abs(moved)))
    assert record.train_loss == pytest.approx(LOSS), "the attacker's reported loss is not the round's"
    assert record.extra["client_reported_train_loss_median"] == pytest.approx(LOSS)
    assert record.extra["influence_capped_updates"] == 1 and record.extra["influence_clipped_updates"] == 1
