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

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[FedgeService, Signer, list[bytes]]:
    d = tmp_path_factory.mktemp("fuzz")
    key, pub = new_keys(d, "fuzzer")
    svc = FedgeService(store=Store(d / "s.db"), verifier=Verifier(pub), run_id="fuzz", config_toml="",
                       num_clients=2, rounds=1, node_timeout_s=3600)
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
    good = wire.encode({"delta": [np.ones((3, 2), np.float32)], "num_examples": 4, "metrics": {},
                        "extras": {}, "payload": {}}, chunk_size=8)
    head = pb.PushMessage(header=pb.PushHeader(task_id=task.task_id, round=1, update=good.header))
    seeds = [join, pb.PollRequest(session=session).SerializeToString(),
             pb.FetchRequest(task_id=task.task_id).SerializeToString(), head.SerializeToString(),
             *[pb.PushMessage(chunk=c).SerializeToString() for c in good.chunks()]]
    return svc, signer, seeds


def mutate(data: Any, seed: bytes) -> bytes:
    b = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        i = data.draw(st.integers(0, max(0, len(b) - 1)))
        if op == "flip" and b:
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del b[i:i + data.draw(st.integers(1, 8))]
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
            {"Join": svc.join, "Poll": svc.poll, "Status": svc.status_reply}[method](messages[0], md)
    except FedgeError:
        pass


METHODS = ["Join", "Poll", "Fetch", "Push", "Status"]


@FUZZ
@given(st.data())
def test_random_bytes_never_crash_a_handler(setup: Any, data: Any) -> None:
    svc, signer, _ = setup
    method = data.draw(st.sampled_from(METHODS))
    drive(svc, signer, method, data.draw(st.lists(st.binary(max_size=200), min_size=1, max_size=4)))


@FUZZ
@given(st.data())
def test_mutated_valid_messages_never_crash_a_handler(setup: Any, data: Any) -> None:
    svc, signer, seeds = setup
    method = data.draw(st.sampled_from(METHODS))
    if method == "Push":
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


def test_the_service_still_serves_after_fuzzing(setup: Any) -> None:
    svc, signer, seeds = setup
    join = seeds[0]
    session = pb.JoinReply.FromString(svc.join(join, signer.metadata("Join", join))).session
    poll = pb.PollRequest(session=session).SerializeToString()
    reply = pb.PollReply.FromString(svc.poll(poll, signer.metadata("Poll", poll)))
    assert reply.action in (pb.PollReply.TRAIN, pb.PollReply.WAIT)
    status = svc.status()
    assert status.run_id == "fuzz" and status.nodes[0].client_id == 0 and status.nodes[0].connected
