"""Secure aggregation through the in-process transport's exchange: the exact ring sum.

The round's real clients train, keep their fixed-point words in their own state, and
answer the four stages through :meth:`InProcessTransport.exchange`; whoever drops at
whichever stage, the server's decoded total is exactly the decoded plain sum of the
included clients' words.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedge.clients import LearnerClient, NumpyLogReg
from fedge.core.params import ParamSpec
from fedge.core.types import ClientUpdate, TrainConfig
from fedge.data import synthetic
from fedge.pipeline import Pipeline, RoundContext
from fedge.secagg import SecAggConfig, SecureAggregation, fixedpoint
from fedge.secagg.client import STATE_KEY
from fedge.secagg.messages import STAGES, RoundSetup
from fedge.secagg.orchestrator import run_round
from fedge.secagg.server import SecAggAbort
from fedge.strategies import FedAvg
from fedge.transport import InProcessTransport
from fedge.transport.exchange import CohortSum, Responder

N = 10
FD = synthetic(0.5, 0.5, num_clients=N, seed=1)
MODEL = NumpyLogReg(60, 10)


def secure_round(**cfg: Any) -> tuple[SecureAggregation, InProcessTransport, list[ClientUpdate], dict[int, Any]]:
    """Train the whole population once; each client's words as its state holds them."""
    t = SecureAggregation(SecAggConfig(enabled=True, clip=4.0, **cfg), FedAvg(), max_cohort=N)
    tr = InProcessTransport(
        lambda cid: LearnerClient(cid, MODEL, FD.client(cid)), N, strategy=FedAvg(), pipeline=Pipeline([t]), seed=3
    )
    params = MODEL.init_params(0)
    ins = FedAvg().configure(FedAvg().init(params, num_clients=N), 1, TrainConfig())
    updates = [u for u in tr.fit(1, list(range(N)), params, ins) if isinstance(u, ClientUpdate)]
    assert len(updates) == N and all(not u.delta and u.payload == {"secagg": "ready"} for u in updates)
    words = {cid: tr.states[cid][STATE_KEY]["words"].copy() for cid in range(N)}
    return t, tr, updates, words


def rctx() -> RoundContext:
    return RoundContext(
        round_num=1, rng=np.random.default_rng(5), spec=ParamSpec.of(MODEL.init_params(0)), num_sampled=N
    )


def decoded(t: SecureAggregation, words: dict[int, Any], ids: list[int]) -> np.ndarray:
    total = np.zeros_like(words[ids[0]])
    for c in ids:
        total += words[c]
    return fixedpoint.decode(total, scale=t.scale, bits=t.cfg.bits) * t.max_weight  # type: ignore[no-any-return]


def test_secure_aggregation_is_a_responder_and_a_cohort_sum() -> None:
    t = SecureAggregation(SecAggConfig(enabled=True), FedAvg(), max_cohort=N)
    assert isinstance(t, Responder) and isinstance(t, CohortSum) and t.stages == STAGES


@pytest.mark.parametrize("stage", STAGES)
def test_the_sum_through_the_exchange_is_the_plain_sum_of_the_included_words(stage: str) -> None:
    t, tr, updates, words = secure_round(simulate_dropout=0.2, dropout_stage=stage)
    terms, count, lost = t.sum_cohort(updates, rctx(), tr)
    (ids,) = [v for k, v in lost.items() if k == f"secagg {stage}: dropped"]
    assert len(ids) == 2 and sum(len(v) for v in lost.values()) == 2
    included = sorted(set(range(N)) - (set() if stage == "unmask" else set(ids)))
    assert count == len(included)
    flat = np.concatenate([np.ravel(x) for name in sorted(terms) for x in terms[name]])
    assert np.array_equal(flat, decoded(t, words, included))


def test_every_included_client_forgets_its_words_after_unmasking() -> None:
    t, tr, updates, _ = secure_round()
    _, count, lost = t.sum_cohort(updates, rctx(), tr)
    assert count == N and lost == {}
    assert not any(STATE_KEY in tr.states[cid] for cid in range(N))


def test_a_client_without_an_input_is_lost_at_advertise_with_its_reason() -> None:
    _, tr, _, words = secure_round()
    del tr.states[4][STATE_KEY]
    setup = RoundSetup(1, tuple(range(N)), k=N - 1, t=5, length=words[0].size, graph_seed=2)
    res = run_round(setup, tr)
    assert res.dropped == {"advertise: ProtocolError: client 4 has no input for round 1": [4]}
    others = [c for c in range(N) if c != 4]
    assert res.included == others
    expected = np.zeros_like(words[0])
    for c in others:
        expected += words[c]
    assert np.array_equal(res.total, expected)


def test_too_many_dropouts_abort_through_the_exchange() -> None:
    t, tr, updates, _ = secure_round(simulate_dropout=0.6, dropout_stage="share")
    with pytest.raises(SecAggAbort, match="threshold"):
        t.sum_cohort(updates, rctx(), tr)
