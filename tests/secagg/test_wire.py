"""Protocol messages survive bytes without pickle, and a full round runs over bytes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedge.secagg import client as C
from fedge.secagg import server as S
from fedge.secagg import wire
from fedge.secagg.messages import RoundSetup, ShareInbox
from fedge.secagg.orchestrator import run_protocol


def test_a_whole_round_runs_with_every_message_through_bytes() -> None:
    setup = wire.unpack(wire.pack(RoundSetup(2, (4, 5, 6, 7, 8), k=4, t=3, length=40, graph_seed=5)))
    rng = np.random.default_rng(0)
    inputs = {c: rng.integers(0, 2**32, 40, dtype=np.uint64).astype(np.uint32) for c in setup.cohort}
    kinds: set[str] = set()

    def over_the_wire(stage: str, msg: object) -> object:
        data = wire.pack(msg)
        assert isinstance(data, bytes)
        back = wire.unpack(data)
        assert type(back) is type(msg)
        kinds.add(type(msg).__name__)
        return back

    res = run_protocol(setup, inputs, drop={"masked_input": {6}}, tamper=over_the_wire)
    expected = sum((inputs[c] for c in res.included), np.zeros(40, np.uint32))
    assert np.array_equal(res.total, expected)
    assert kinds == {"AdvertiseKeys", "ShareKeys", "MaskedInput", "UnmaskResponse"}


def test_malformed_or_foreign_bytes_are_refused() -> None:
    good = wire.pack(RoundSetup(1, (1, 2, 3), k=2, t=2, length=4))
    for data in (b"", b"pickle", good[:-3] + b"xyz", good + b"extra", b"FSA1\x63" + good[5:]):
        with pytest.raises(wire.WireError):
            wire.unpack(data)
    with pytest.raises(wire.WireError):
        wire.pack({"not": "a message"})
    header = json.dumps(
        {"fields": {"client_id": 1, "round_num": 1, "vector": {"a": 0, "dtype": "|O", "shape": [1]}}, "blobs": [8]}
    ).encode()
    obj = wire._HEAD.pack(wire.MAGIC, 5, len(header)) + header + bytes(8)
    with pytest.raises(wire.WireError, match="unsigned integer"):
        wire.unpack(obj)
    assert wire.unpack(good) == RoundSetup(1, (1, 2, 3), k=2, t=2, length=4)


def test_server_messages_round_trip() -> None:
    setup = RoundSetup(3, (1, 2, 3, 4), k=3, t=2, length=8)
    states, ads = {}, []
    for c in setup.cohort:
        states[c], ad = C.advertise(setup, c)
        ads.append(ad)
    roster, _ = S.collect_keys(setup, ads)
    shared = S.route_shares(setup, roster, [C.share_keys(states[c], roster) for c in setup.cohort])
    summed = S.MaskedSum(setup, shared)
    for c in setup.cohort:
        summed.add(C.masked_input(states[c], shared.inboxes[c], np.zeros(8, np.uint32)))
    for msg in (roster, shared.inboxes[2], summed.request()):
        assert wire.unpack(wire.pack(msg)) == msg


def test_an_inbox_keeps_its_staleness_factor_exactly_and_refuses_a_non_finite_one() -> None:
    box = ShareInbox(4, 2, {1: b"sealed"}, factor=1 / 3)
    back = wire.unpack(wire.pack(box))
    assert back == box and back.factor == 1 / 3
    with pytest.raises(wire.WireError):
        wire.pack(ShareInbox(4, 2, {}, factor=math.nan))
    data = wire.pack(ShareInbox(4, 2, {}, factor=0.5)).replace(b"0.5", b"NaN")
    with pytest.raises(wire.WireError, match="non-finite"):
        wire.unpack(data)
