"""Client stages: tampered or misrouted shares are detected, requests are answered safely."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedge.secagg import client as C
from fedge.secagg import server as S
from fedge.secagg.messages import RoundSetup, ShareInbox, UnmaskRequest

SETUP = RoundSetup(7, (1, 2, 3, 4, 5), k=4, t=3, length=16)


def shared_round(setup: RoundSetup = SETUP) -> tuple[dict[int, C.ClientSecrets], S.Shared]:
    states, ads = {}, []
    for cid in setup.cohort:
        states[cid], ad = C.advertise(setup, cid)
        ads.append(ad)
    roster, _ = S.collect_keys(setup, ads)
    shared = S.route_shares(setup, roster, [C.share_keys(states[c], roster) for c in setup.cohort])
    return states, shared


def test_a_tampered_ciphertext_is_detected_and_names_the_sender() -> None:
    states, shared = shared_round()
    box = shared.inboxes[1]
    bad = bytearray(box.ciphertexts[2])
    bad[20] ^= 0xFF
    tampered = replace(box, ciphertexts={**box.ciphertexts, 2: bytes(bad)})
    with pytest.raises(C.ProtocolError, match="from client 2 to client 1"):
        C.masked_input(states[1], tampered, np.zeros(16, np.uint32))


def test_a_share_sent_to_another_client_or_from_another_round_is_refused() -> None:
    states, shared = shared_round()
    box = shared.inboxes[1]
    misrouted = replace(box, ciphertexts={**box.ciphertexts, 2: shared.inboxes[3].ciphertexts[2]})
    with pytest.raises(C.ProtocolError, match="authentication"):
        C.masked_input(states[1], misrouted, np.zeros(16, np.uint32))
    _, other_shared = shared_round(replace(SETUP, round_num=8))
    old = replace(box, ciphertexts={**box.ciphertexts, 2: other_shared.inboxes[1].ciphertexts[2]})
    with pytest.raises(C.ProtocolError):
        C.masked_input(states[1], old, np.zeros(16, np.uint32))
    with pytest.raises(C.ProtocolError, match="round 8"):
        C.masked_input(states[1], ShareInbox(8, 1, box.ciphertexts), np.zeros(16, np.uint32))


def test_input_of_the_wrong_length_or_type_is_refused() -> None:
    states, shared = shared_round()
    for bad in (np.zeros(15, np.uint32), np.zeros(16, np.uint64), np.zeros(16, np.float32)):
        with pytest.raises(C.ProtocolError, match="expected 16 uint32"):
            C.masked_input(states[1], shared.inboxes[1], bad)


def test_unmask_reveals_one_kind_of_share_per_neighbour_and_answers_once() -> None:
    states, shared = shared_round()
    for c in SETUP.cohort:
        C.masked_input(states[c], shared.inboxes[c], np.zeros(16, np.uint32))
    with pytest.raises(C.ProtocolError, match="both"):
        C.unmask(states[1], UnmaskRequest(7, (1, 2, 3, 4), (4, 5)))
    with pytest.raises(C.ProtocolError, match="threshold"):
        C.unmask(states[1], UnmaskRequest(7, (1, 2), (3, 4, 5)))
    resp = C.unmask(states[1], UnmaskRequest(7, (1, 2, 3, 4), (5,)))
    assert set(resp.seed_shares) == {2, 3, 4} and set(resp.key_shares) == {5}
    with pytest.raises(C.ProtocolError, match="already answered"):
        C.unmask(states[1], UnmaskRequest(7, (1, 2, 3), (4, 5)))


def test_a_client_outside_the_cohort_cannot_join() -> None:
    with pytest.raises(C.ProtocolError, match="not in round 7"):
        C.advertise(SETUP, 9)
