"""Secure aggregation's one orchestrator over ``GrpcTransport.exchange`` without gRPC: nodes in
threads answer the service's stages.

Every stage is relayed through the service's Poll and SecAgg handlers with signed, packed
messages; nodes that stay silent past a stage's deadline count as dropped there, and too
few survivors abort the round with nothing unmasked.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.deploy.auth import Signer, Verifier, load_private, new_keys
from fedge.deploy.proto import pb
from fedge.deploy.service import FedgeService
from fedge.deploy.store import Store
from fedge.deploy.transport import GrpcTransport
from fedge.pipeline import Pipeline
from fedge.secagg import SecAggConfig, SecureAggregation
from fedge.secagg import client as C
from fedge.secagg import wire as secagg_wire
from fedge.secagg.messages import RoundSetup
from fedge.secagg.orchestrator import run_round
from fedge.secagg.server import SecAggAbort
from fedge.strategies import FedAvg

N, LENGTH = 4, 5


def fake_node(
    svc: FedgeService, signer: Signer, cid: int, words: np.ndarray, silent_from: str, stop: threading.Event
) -> None:
    """Polls and answers each stage with the client's stage handler, until ``silent_from``."""
    join = pb.JoinRequest(partition=cid).SerializeToString()
    session = pb.JoinReply.FromString(svc.join(join, signer.metadata("Join", join))).session
    poll = pb.PollRequest(session=session).SerializeToString()
    state: dict[str, Any] = {}
    C.hold_input(state, 1, words)
    while not stop.wait(0.01):
        reply = pb.PollReply.FromString(svc.poll(poll, signer.metadata("Poll", poll)))
        if reply.action != pb.PollReply.SECAGG:
            continue
        if reply.secagg_stage == silent_from:
            return  # vanishes: no more polls, no answer
        msg = secagg_wire.unpack(reply.secagg_message)
        answer = C.respond(reply.secagg_stage, msg, client_id=cid, state=state)
        post = pb.SecAggPost(
            task_id=reply.task_id, round=reply.round, stage=reply.secagg_stage, message=secagg_wire.pack(answer)
        ).SerializeToString()
        rep = pb.SecAggReply.FromString(svc.secagg_post(post, signer.metadata("SecAgg", post)))
        assert rep.accepted, rep.reason


def relay(tmp_path: Path, silent: dict[int, str]) -> tuple[Any, dict[int, np.ndarray], FedgeService]:
    keys = [new_keys(tmp_path, f"n{i}") for i in range(N)]
    allow = tmp_path / "allow.txt"
    allow.write_text("".join(pub.read_text() for _, pub in keys))
    svc = FedgeService(
        store=Store(tmp_path / "s.db"),
        verifier=Verifier(allow),
        run_id="r",
        config_toml="",
        num_clients=N,
        rounds=1,
        node_timeout_s=30,
    )
    transport = GrpcTransport(svc, secagg_stage_s=1.0)
    rng = np.random.default_rng(0)
    words = {cid: rng.integers(0, 2**32, LENGTH, dtype=np.uint64).astype(np.uint32) for cid in range(N)}
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=fake_node,
            daemon=True,
            args=(svc, Signer(load_private(k)), cid, words[cid], silent.get(cid, ""), stop),
        )
        for cid, (k, _) in enumerate(keys)
    ]
    for t in threads:
        t.start()
    while len(svc.connected()) < N:
        stop.wait(0.01)
    setup = RoundSetup(1, tuple(range(N)), k=N - 1, t=2, length=LENGTH, graph_seed=7)
    try:
        return run_round(setup, transport), words, svc
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def ring_sum(words: dict[int, np.ndarray], ids: list[int]) -> np.ndarray:
    return (sum(words[c].astype(np.uint64) for c in ids) % 2**32).astype(np.uint32)  # type: ignore[no-any-return]


def test_every_stage_is_relayed_and_only_the_sum_is_unmasked(tmp_path: Path) -> None:
    res, words, svc = relay(tmp_path, {})
    assert res.included == [0, 1, 2, 3] and res.dropped == {}
    np.testing.assert_array_equal(res.total, ring_sum(words, [0, 1, 2, 3]))
    assert svc.secagg is not None and svc.secagg.closed
    assert all(res.client_bytes[c] > 4 * LENGTH for c in range(N))


def test_a_node_silent_past_the_stage_deadline_is_unmasked_as_a_dropout(tmp_path: Path) -> None:
    res, words, _ = relay(tmp_path, {2: "masked_input"})
    assert res.included == [0, 1, 3]
    assert res.dropped == {"masked_input: missed the 1s stage deadline": [2]}
    np.testing.assert_array_equal(res.total, ring_sum(words, [0, 1, 3]))


def test_too_few_survivors_abort_the_round(tmp_path: Path) -> None:
    with pytest.raises(SecAggAbort, match="threshold is 2"):
        relay(tmp_path, {1: "share", 2: "share", 3: "share"})


def test_a_node_answers_with_its_own_keys_resends_a_lost_answer_and_withdraws_from_garbage(tmp_path: Path) -> None:
    from fedge.deploy.node import Node

    key, _ = new_keys(tmp_path, "node")
    node = Node("127.0.0.1:1", Signer(load_private(key)), insecure=True)
    node.client_id = 1
    node.pipeline = Pipeline([SecureAggregation(SecAggConfig(enabled=True), FedAvg(), max_cohort=N)])
    C.hold_input(node._exchange_state, 1, np.zeros(LENGTH, np.uint32))
    posts: list[Any] = []

    def unary(method: str, msg: Any) -> bytes:
        assert method == "SecAgg"
        posts.append(msg)
        return pb.SecAggReply(accepted=True).SerializeToString()  # type: ignore[no-any-return]

    node._unary = unary  # type: ignore[method-assign]
    setup = RoundSetup(1, tuple(range(N)), k=N - 1, t=2, length=LENGTH, graph_seed=7)
    ask = pb.PollReply(
        action=pb.PollReply.SECAGG,
        task_id="t",
        round=1,
        secagg_stage="advertise",
        secagg_message=secagg_wire.pack(setup),
    )
    node.secagg(ask)
    node.secagg(ask)
    first = secagg_wire.unpack(posts[0].message)
    assert first.client_id == 1 and len(first.enc_pk) == 32 and posts[1].message == posts[0].message
    for stage, junk in (("share", b"garbage"), ("unmask", secagg_wire.pack(setup))):
        node.secagg(
            pb.PollReply(action=pb.PollReply.SECAGG, task_id="t", round=1, secagg_stage=stage, secagg_message=junk)
        )
        assert posts[-1].stage == stage and posts[-1].message == b""
    node.channel.close()


def test_a_node_keeps_its_words_in_memory_only_and_answers_from_them(tmp_path: Path) -> None:
    from fedge.config.schema import from_dict
    from fedge.deploy import wire
    from fedge.deploy.node import MemoryState, Node, partition_client
    from fedge.deploy.service import encode_instructions
    from fedge.federation import build, client_side

    exp = from_dict(
        {
            "data": {"dataset": "synthetic", "num_clients": N},
            "model": {"name": "logreg", "framework": "numpy"},
            "training": {"clients_per_round": N},
            "secagg": {"enabled": True, "clip": 4.0},
        }
    )
    built = build(exp)
    key, _ = new_keys(tmp_path, "node")
    node = Node("127.0.0.1:1", Signer(load_private(key)), insecure=True)
    node.client_id, node.exp, node.client = 1, exp, partition_client(exp, 1)
    node.state = MemoryState()
    node.strategy, node.pipeline = client_side(exp)
    state = built.strategy.init(built.initial, num_clients=N)
    task = wire.encode(encode_instructions(built.initial, built.strategy.configure(state, 1, built.train)))
    node.fetch = lambda reply: wire.decode(task.header, task.chunks(), max_bytes=2**26)  # type: ignore[method-assign]
    pushed: list[str] = []

    def retrying(what: str, fn: Any) -> bytes:
        pushed.append(what)
        return pb.PushReply(accepted=True).SerializeToString()  # type: ignore[no-any-return]

    node._retrying = retrying  # type: ignore[method-assign]
    node.train(pb.PollReply(action=pb.PollReply.TRAIN, task_id="t", round=1))
    assert pushed == ["push"] and node.rounds_trained == 1
    saved_round, _, after = node.state.load()
    assert saved_round == 1 and C.STATE_KEY not in after
    words = node._exchange_state[C.STATE_KEY]["words"]
    assert words.dtype == np.uint32 and words.size > 0
    setup = RoundSetup(1, tuple(range(N)), k=N - 1, t=2, length=words.size, graph_seed=7)
    posts: list[Any] = []

    def unary(method: str, msg: Any) -> bytes:
        posts.append(msg)
        return pb.SecAggReply(accepted=True).SerializeToString()  # type: ignore[no-any-return]

    node._retrying = lambda what, fn: fn()  # type: ignore[method-assign]
    node._unary = unary  # type: ignore[method-assign]
    ask = pb.PollReply(action=pb.PollReply.SECAGG, task_id="t", round=1, secagg_stage="advertise")
    ask.secagg_message = secagg_wire.pack(setup)
    node.secagg(ask)
    assert secagg_wire.unpack(posts[-1].message).client_id == 1
    assert node._exchange_state[C.STATE_KEY]["secrets"] is not None
    node.channel.close()
