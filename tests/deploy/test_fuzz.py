"""Fuzzing the server's parsers and handlers with random and mutated messages.

Every input must end in a refusal (a :class:`FedgeError`) or a reply — never another
exception — and the service must keep serving a well-formed node afterwards.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedge.core.errors import FedgeError
from fedge.core.types import FitInstructions, TrainConfig
from fedge.deploy import wire
from fedge.deploy.auth import Signer, Verifier, load_private, new_keys
from fedge.deploy.proto import pb
from fedge.deploy.service import FedgeService
from fedge.deploy.store import Store
from fedge.secagg import client as C
from fedge.secagg import server as S
from fedge.secagg import wire as secagg_wire
from fedge.secagg.messages import RoundSetup

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[FedgeService, Signer, list[bytes]]:
    d = tmp_path_factory.mktemp("fuzz")
    key, pub = new_keys(d, "fuzzer")
    svc = FedgeService(
        store=Store(d / "s.db"),
        verifier=Verifier(pub),
        run_id="fuzz",
        config_toml="",
        num_clients=2,
        rounds=1,
        node_timeout_s=3600,
    )
    signer = Signer(load_private(key))
    join = pb.JoinRequest(partition=0).SerializeToString()
    session = pb.JoinReply.FromString(svc.join(join, signer.metadata("Join", join))).session
    params = [np.zeros((3, 2), np.float32)]
    task = svc.open_round(1, [0], params, FitInstructions(1, TrainConfig()))

    def loop() -> None:
        while True:
            _, verdict = task.results.get()
            verdict.set(False, "read by the fuzz loop")

    threading.Thread(target=loop, daemon=True).start()
    good = wire.encode(
        {"delta": [np.ones((3, 2), np.float32)], "num_examples": 4, "metrics": {}, "extras": {}, "payload": {}},
        chunk_size=8,
    )
    head = pb.PushMessage(header=pb.PushHeader(task_id=task.task_id, round=1, update=good.header))
    seeds = [
        join,
        pb.PollRequest(session=session).SerializeToString(),
        pb.FetchRequest(task_id=task.task_id).SerializeToString(),
        head.SerializeToString(),
        *[pb.PushMessage(chunk=c).SerializeToString() for c in good.chunks()],
    ]
    return svc, signer, seeds


SECAGG_SETUP = RoundSetup(1, (0, 1), k=1, t=1, length=6)


@pytest.fixture(scope="module")
def secagg(setup: Any) -> tuple[Any, dict[str, bytes], dict[str, bytes]]:
    """A secure-aggregation session of the fuzzed service; each stage's request and a valid answer."""
    svc = setup[0]
    sa = svc.open_secagg(SECAGG_SETUP)
    (s0, a0), (s1, a1) = C.advertise(SECAGG_SETUP, 0), C.advertise(SECAGG_SETUP, 1)
    roster, _ = S.collect_keys(SECAGG_SETUP, [a0, a1])
    k0, k1 = C.share_keys(s0, roster), C.share_keys(s1, roster)
    shared = S.route_shares(SECAGG_SETUP, roster, [k0, k1])
    masked = C.masked_input(s0, shared.inboxes[0], np.arange(6, dtype=np.uint32))
    summed = S.MaskedSum(SECAGG_SETUP, shared)
    summed.add(masked)
    request = summed.request()
    requests = {"advertise": SECAGG_SETUP, "share": roster, "masked_input": shared.inboxes[0], "unmask": request}
    answers = {"advertise": a0, "share": k0, "masked_input": masked, "unmask": C.unmask(s0, request)}
    posts = {
        stage: pb.SecAggPost(task_id=sa.task_id, round=1, stage=stage, message=secagg_wire.pack(m)).SerializeToString()
        for stage, m in answers.items()
    }
    return sa, {k: secagg_wire.pack(v) for k, v in requests.items()}, posts


def mutate(data: Any, seed: bytes) -> bytes:
    b = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        i = data.draw(st.integers(0, max(0, len(b) - 1)))
        if op == "flip" and b:
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del b[i : i + data.draw(st.integers(1, 8))]
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "dup":
            b += b[i:]
    return bytes(b)


def drive(svc: FedgeService, signer: Signer, method: str, messages: list[bytes]) -> None:
    md = signer.metadata(method, messages[0] if messages else b"")
    try:
        if method == "Push":
            svc.push(iter(messages), md)
        elif method == "Fetch":
            for _ in svc.fetch(messages[0], md):
                pass
        else:
            {"Join": svc.join, "Poll": svc.poll, "Status": svc.status_reply, "SecAgg": svc.secagg_post}[method](
                messages[0], md
            )
    except FedgeError:
        pass


METHODS = ["Join", "Poll", "Fetch", "Push", "Status", "SecAgg"]


def open_stage(svc: FedgeService, secagg: Any, data: Any) -> str:
    """Open a random stage of the fuzzed secure-aggregation session for the fuzzing node."""
    sa, requests, _ = secagg
    stage: str = data.draw(st.sampled_from(sorted(requests)))
    svc.secagg_stage(sa, stage, {0: requests[stage]})
    return stage


@FUZZ
@given(st.data())
def test_random_bytes_never_crash_a_handler(setup: Any, secagg: Any, data: Any) -> None:
    svc, signer, _ = setup
    open_stage(svc, secagg, data)
    method = data.draw(st.sampled_from(METHODS))
    drive(svc, signer, method, data.draw(st.lists(st.binary(max_size=200), min_size=1, max_size=4)))


@FUZZ
@given(st.data())
def test_mutated_valid_messages_never_crash_a_handler(setup: Any, secagg: Any, data: Any) -> None:
    svc, signer, seeds = setup
    stage = open_stage(svc, secagg, data)
    method = data.draw(st.sampled_from(METHODS))
    if method == "SecAgg":
        post = secagg[2][stage] if data.draw(st.booleans()) else data.draw(st.sampled_from(sorted(secagg[2].values())))
        msgs = [mutate(data, post)]
    elif method == "Push":
        msgs = [mutate(data, s) if data.draw(st.booleans()) else s for s in seeds[3:]]
    else:
        msgs = [mutate(data, data.draw(st.sampled_from(seeds)))]
    drive(svc, signer, method, msgs)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300), st.lists(st.binary(max_size=64), max_size=3))
def test_random_bundle_headers_and_chunks_are_refused_or_decoded(header: bytes, chunks: list[bytes]) -> None:
    try:
        h = wire.parse(pb.BundleHeader, header)
        inc = wire.Incoming(h, max_bytes=1 << 16)
        for i, c in enumerate(chunks):
            inc.add(pb.Chunk(index=i, data=c))
        inc.value()
    except FedgeError:
        pass


def test_valid_secagg_answers_are_accepted_and_wrong_ones_refused(setup: Any, secagg: Any) -> None:
    svc, signer, _ = setup
    sa, requests, posts = secagg
    for stage in requests:
        svc.secagg_stage(sa, stage, {0: requests[stage]})
        poll = pb.PollRequest(
            session=pb.JoinReply.FromString(svc.join(setup[2][0], signer.metadata("Join", setup[2][0]))).session
        ).SerializeToString()
        reply = pb.PollReply.FromString(svc.poll(poll, signer.metadata("Poll", poll)))
        assert reply.action == pb.PollReply.SECAGG and reply.secagg_stage == stage
        assert reply.secagg_message == requests[stage]
        other = posts["unmask" if stage == "advertise" else "advertise"]
        wrong = pb.SecAggPost.FromString(other)
        wrong.stage = stage
        raw = wrong.SerializeToString()
        rep = pb.SecAggReply.FromString(svc.secagg_post(raw, signer.metadata("SecAgg", raw)))
        assert not rep.accepted and "expected" in rep.reason
        assert sa.inbox.get_nowait() == (0, None)
        svc.secagg_stage(sa, stage, {0: requests[stage]})
        rep = pb.SecAggReply.FromString(svc.secagg_post(posts[stage], signer.metadata("SecAgg", posts[stage])))
        assert rep.accepted, rep.reason
        cid, msg = sa.inbox.get_nowait()
        assert cid == 0 and msg is not None
        again = pb.SecAggReply.FromString(svc.secagg_post(posts[stage], signer.metadata("SecAgg", posts[stage])))
        assert not again.accepted and "already answered" in again.reason


def test_the_service_still_serves_after_fuzzing(setup: Any) -> None:
    svc, signer, seeds = setup
    join = seeds[0]
    session = pb.JoinReply.FromString(svc.join(join, signer.metadata("Join", join))).session
    poll = pb.PollRequest(session=session).SerializeToString()
    reply = pb.PollReply.FromString(svc.poll(poll, signer.metadata("Poll", poll)))
    assert reply.action in (pb.PollReply.TRAIN, pb.PollReply.WAIT, pb.PollReply.SECAGG)
    status = svc.status()
    assert status.run_id == "fuzz" and status.nodes[0].client_id == 0 and status.nodes[0].connected
