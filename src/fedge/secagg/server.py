"""The server's side of secure aggregation: stage functions over the clients' messages.

Bonawitz et al., CCS 2017 (figure 4) with Bell et al.'s SecAgg+ graph (CCS 2020). The
server only ever holds public keys, ciphertexts it cannot open, masked vectors (summed
as they arrive) and, at the end, exactly ``t`` shares of each secret it is entitled to:
the self-mask seed of a client that sent its masked input, or the mask key of one that
dropped after sharing. Every stage checks that enough clients remain and aborts with
:class:`SecAggAbort` otherwise; nothing is then revealed or changed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import AggregationError
from fedge.secagg import crypto, shamir
from fedge.secagg.client import CHUNKS, MASK_INFO, SEED_LABEL, info
from fedge.secagg.messages import (
    AdvertiseKeys,
    KeyRoster,
    MaskedInput,
    RoundSetup,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)


class SecAggAbort(AggregationError):
    """Too few clients remain (or a secret could not be reconstructed): the round aborts."""


def _need(setup: RoundSetup, have: int, stage: str) -> None:
    if have < setup.t:
        raise SecAggAbort(
            f"secure aggregation aborted in round {setup.round_num}: {have} clients left "
            f"after {stage}, threshold is {setup.t}"
        )


def collect_keys(setup: RoundSetup, msgs: list[AdvertiseKeys]) -> tuple[KeyRoster, dict[int, str]]:
    """Stage 0: the roster of well-formed, unique advertisements from the cohort."""
    keys: dict[int, tuple[bytes, bytes]] = {}
    rejected: dict[int, str] = {}
    for m in msgs:
        if m.round_num != setup.round_num:
            rejected[m.client_id] = f"keys for round {m.round_num}"
        elif m.client_id not in setup.cohort or m.client_id in keys:
            rejected[m.client_id] = "not in the cohort or advertised twice"
        elif len(m.enc_pk) != 32 or len(m.mask_pk) != 32 or m.enc_pk == m.mask_pk:
            rejected[m.client_id] = "malformed public keys"
        else:
            keys[m.client_id] = (m.enc_pk, m.mask_pk)
    _need(setup, len(keys), "advertising keys")
    return KeyRoster(setup.round_num, keys), rejected


@dataclass
class Shared:
    """Stage 1 state: who shared (U2), their seed commitments, and each client's inbox."""

    inboxes: dict[int, ShareInbox]
    commitments: dict[int, bytes]
    rejected: dict[int, str] = field(default_factory=dict)


def route_shares(setup: RoundSetup, roster: KeyRoster, msgs: list[ShareKeys]) -> Shared:
    """Stage 1: forward each ciphertext to its recipient, unopened."""
    graph = setup.graph()
    boxes: dict[int, dict[int, bytes]] = defaultdict(dict)
    commitments: dict[int, bytes] = {}
    rejected: dict[int, str] = {}
    for m in msgs:
        if m.round_num != setup.round_num:
            rejected[m.client_id] = f"shares for round {m.round_num}"
            continue
        if m.client_id not in roster.keys or m.client_id in commitments:
            rejected[m.client_id] = "shared keys without advertising, or twice"
            continue
        live = {v for v in graph[m.client_id] if v in roster.keys}
        if set(m.ciphertexts) != live or len(m.seed_commitment) != 32:
            rejected[m.client_id] = "shares not addressed to exactly its live neighbours"
            continue
        commitments[m.client_id] = m.seed_commitment
        for v, ct in m.ciphertexts.items():
            boxes[v][m.client_id] = ct
    _need(setup, len(commitments), "sharing keys")
    inboxes = {
        v: ShareInbox(setup.round_num, v, {u: c for u, c in boxes[v].items() if u in commitments}) for v in commitments
    }
    return Shared(inboxes, commitments, rejected)


@dataclass
class MaskedSum:
    """Stage 2: masked vectors summed modulo 2^b as they arrive; the survivors U3."""

    setup: RoundSetup
    shared: Shared
    total: npt.NDArray[Any] = field(init=False)
    survivors: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.total = np.zeros(self.setup.length, dtype=f"uint{self.setup.bits}")

    def add(self, m: MaskedInput) -> bool:
        """Add one masked input; a bad one is rejected (and later unmasked as a dropout)."""
        v = m.vector
        why = None
        if m.round_num != self.setup.round_num:
            why = f"masked input for round {m.round_num}"
        elif m.client_id not in self.shared.commitments or m.client_id in self.survivors:
            why = "masked input without sharing keys, or twice"
        elif not isinstance(v, np.ndarray) or v.dtype != self.total.dtype or v.shape != self.total.shape:
            shape = getattr(v, "shape", None)
            why = f"masked vector of shape {shape}, expected ({self.setup.length},) {self.total.dtype}"
        if why is not None:
            self.rejected[m.client_id] = why
            return False
        self.total += v
        self.survivors.append(m.client_id)
        return True

    def request(self) -> UnmaskRequest:
        _need(self.setup, len(self.survivors), "masked input collection")
        alive = set(self.survivors)
        dropped = tuple(sorted(u for u in self.shared.commitments if u not in alive))
        return UnmaskRequest(self.setup.round_num, tuple(sorted(alive)), dropped)


def _reconstruct(
    setup: RoundSetup, pieces: dict[int, dict[int, npt.NDArray[np.uint64]]], check: Any, what: str
) -> dict[int, bytes]:
    """Reconstruct each owner's secret from exactly ``t`` shares, grouped by share holders
    so the Lagrange coefficients and the field arithmetic are shared across owners."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for owner, by_holder in pieces.items():
        if len(by_holder) < setup.t:
            raise SecAggAbort(
                f"secure aggregation aborted in round {setup.round_num}: {len(by_holder)} "
                f"shares of client {owner}'s {what}, threshold is {setup.t}"
            )
        groups[tuple(sorted(by_holder)[: setup.t])].append(owner)
    out: dict[int, bytes] = {}
    for holders, owners in groups.items():
        xs = [setup.point(h) for h in holders]
        rows = np.stack([np.concatenate([pieces[o][h] for o in owners]) for h in holders])
        flat = shamir.combine(xs, rows).reshape(len(owners), CHUNKS)
        for o, elems in zip(owners, flat, strict=True):
            try:
                secret = shamir.from_field(elems, crypto.SEED_BYTES)
            except shamir.ShamirError:
                secret = b""
            if not secret or not check(o, secret):
                secret = _retry(setup, o, pieces[o], check, what)
            out[o] = secret
    return out


def _retry(setup: RoundSetup, owner: int, by_holder: dict[int, npt.NDArray[np.uint64]], check: Any, what: str) -> bytes:
    """A reconstruction failed its commitment: try the other windows of ``t`` holders."""
    holders = sorted(by_holder)
    for start in range(1, len(holders) - setup.t + 1):
        chosen = holders[start : start + setup.t]
        try:
            secret = shamir.combine_secret(
                [setup.point(h) for h in chosen], np.stack([by_holder[h] for h in chosen]), crypto.SEED_BYTES
            )
        except shamir.ShamirError:
            continue
        if check(owner, secret):
            return secret
    raise SecAggAbort(
        f"secure aggregation aborted in round {setup.round_num}: client {owner}'s {what} "
        "does not match its commitment (a share was tampered with)"
    )


def unmask(
    setup: RoundSetup, roster: KeyRoster, shared: Shared, summed: MaskedSum, responses: list[UnmaskResponse]
) -> npt.NDArray[Any]:
    """Stage 3: remove the survivors' self masks and the dropped clients' pairwise masks.

    Returns the sum of the survivors' inputs modulo 2^b.
    """
    req = summed.request()
    alive, dropped = set(req.survivors), set(req.dropped)
    graph = setup.graph()
    seed_pieces: dict[int, dict[int, npt.NDArray[np.uint64]]] = {u: {} for u in alive}
    key_pieces: dict[int, dict[int, npt.NDArray[np.uint64]]] = {u: {} for u in dropped}
    responders = set()
    for r in responses:
        if r.round_num != setup.round_num or r.client_id not in alive or r.client_id in responders:
            continue
        if set(r.seed_shares) & set(r.key_shares):
            continue
        responders.add(r.client_id)
        for pieces, given in ((seed_pieces, r.seed_shares), (key_pieces, r.key_shares)):
            for owner, share in given.items():
                if owner in pieces and r.client_id in graph[owner] and np.shape(share) == (CHUNKS,):
                    pieces[owner][r.client_id] = np.asarray(share, dtype=np.uint64)
    _need(setup, len(responders), "unmasking")
    commits = shared.commitments
    seeds = _reconstruct(setup, seed_pieces, lambda o, s: crypto.commit(s, SEED_LABEL) == commits[o], "self-mask seed")
    keys = _reconstruct(setup, key_pieces, lambda o, s: crypto.public_of(s) == roster.keys[o][1], "mask key")
    total = summed.total.copy()
    plus: list[bytes] = []
    minus = [seeds[u] for u in sorted(alive)]
    for u in sorted(dropped):
        peers = [v for v in graph[u] if v in alive and u in shared.inboxes[v].ciphertexts]
        seeds_u = crypto.agree_many(keys[u], [roster.keys[v][1] for v in peers], info(MASK_INFO, setup.round_num))
        for v, seed in zip(peers, seeds_u, strict=True):
            (minus if u > v else plus).append(seed)
    crypto.add_masks(total, add=plus, subtract=minus)
    return total
