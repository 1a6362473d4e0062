"""Server stages: bad messages are excluded, tampered shares are caught by the commitments."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedge.secagg import client as C
from fedge.secagg import server as S
from fedge.secagg.messages import MaskedInput, RoundSetup, UnmaskResponse

SETUP = RoundSetup(3, (1, 2, 3, 4, 5, 6), k=5, t=3, length=32)


def run_until_unmask(drop_after_share: int | None = None):
    states, ads = {}, []
    for cid in SETUP.cohort:
        states[cid], ad = C.advertise(SETUP, cid)
        ads.append(ad)
    roster, _ = S.collect_keys(SETUP, ads)
    shared = S.route_shares(SETUP, roster, [C.share_keys(states[c], roster) for c in SETUP.cohort])
    summed = S.MaskedSum(SETUP, shared)
    rng = np.random.default_rng(0)
    xs = {c: rng.integers(0, 2**32, SETUP.length, dtype=np.uint64).astype(np.uint32) for c in SETUP.cohort}
    for c in SETUP.cohort:
        if c != drop_after_share:
            assert summed.add(C.masked_input(states[c], shared.inboxes[c], xs[c]))
    req = summed.request()
    responses = [C.unmask(states[c], req) for c in req.survivors]
    return roster, shared, summed, responses, xs


def test_server_removes_masks_of_a_dropped_client() -> None:
    roster, shared, summed, responses, xs = run_until_unmask(drop_after_share=4)
    total = S.unmask(SETUP, roster, shared, summed, responses)
    assert np.array_equal(total, sum((xs[c] for c in (1, 2, 3, 5, 6)), np.zeros(32, np.uint32)))
    assert not np.array_equal(summed.total, total)


def test_a_tampered_unmask_share_is_caught_and_bypassed_when_spare_shares_exist() -> None:
    roster, shared, summed, responses, xs = run_until_unmask(drop_after_share=4)
    r = responses[0]
    forged = {u: (s + 1) % (2**31 - 1) for u, s in r.seed_shares.items()}
    responses[0] = replace(r, seed_shares=forged)
    total = S.unmask(SETUP, roster, shared, summed, responses)
    assert np.array_equal(total, sum((xs[c] for c in (1, 2, 3, 5, 6)), np.zeros(32, np.uint32)))
    only_t = [replace(x, key_shares={}) if i >= SETUP.t else x for i, x in enumerate(responses)]
    only_t[0] = replace(only_t[0], key_shares={u: (s + 1) % (2**31 - 1) for u, s in r.key_shares.items()})
    with pytest.raises(S.SecAggAbort, match="does not match its commitment"):
        S.unmask(SETUP, roster, shared, summed, only_t)


def test_masked_inputs_of_the_wrong_shape_round_or_sender_are_rejected() -> None:
    states, ads = {}, []
    for cid in SETUP.cohort:
        states[cid], ad = C.advertise(SETUP, cid)
        ads.append(ad)
    roster, _ = S.collect_keys(SETUP, ads)
    shared = S.route_shares(SETUP, roster, [C.share_keys(states[c], roster) for c in SETUP.cohort])
    summed = S.MaskedSum(SETUP, shared)
    good = C.masked_input(states[1], shared.inboxes[1], np.zeros(32, np.uint32))
    assert not summed.add(replace(good, vector=good.vector[:31]))
    assert not summed.add(replace(good, round_num=2))
    assert not summed.add(MaskedInput(9, 3, good.vector))
    assert summed.add(good) and not summed.add(good)
    assert summed.survivors == [1] and summed.total.any()


def test_advertisements_for_another_round_or_reused_keys_are_rejected() -> None:
    ads = [C.advertise(SETUP, c)[1] for c in SETUP.cohort]
    ads[0] = replace(ads[0], round_num=2)
    ads[1] = replace(ads[1], mask_pk=ads[1].enc_pk)
    roster, rejected = S.collect_keys(SETUP, ads)
    assert set(rejected) == {1, 2} and set(roster.keys) == {3, 4, 5, 6}
    with pytest.raises(S.SecAggAbort, match="threshold is 3"):
        S.collect_keys(SETUP, ads[:4])


def test_shares_not_addressed_to_the_live_neighbours_are_rejected() -> None:
    states, ads = {}, []
    for cid in SETUP.cohort:
        states[cid], ad = C.advertise(SETUP, cid)
        ads.append(ad)
    roster, _ = S.collect_keys(SETUP, ads)
    msgs = [C.share_keys(states[c], roster) for c in SETUP.cohort]
    msgs[0] = replace(msgs[0], ciphertexts={k: v for k, v in list(msgs[0].ciphertexts.items())[1:]})
    shared = S.route_shares(SETUP, roster, msgs)
    assert 1 in shared.rejected and 1 not in shared.commitments
    assert all(1 not in box.ciphertexts for box in shared.inboxes.values())
    assert isinstance(UnmaskResponse(1, 3), UnmaskResponse)
