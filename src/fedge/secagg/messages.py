"""The messages of one secure aggregation round, as plain serialisable data.

Every field is an ``int``, ``bytes``, a tuple or dict of them, or a NumPy integer array,
so each message maps directly onto a protobuf message when the stages become real
message rounds over gRPC. ``nbytes`` is what the message costs on the wire (payload
only, without framing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.secagg.graph import GraphParams, neighbours

STAGES = ("advertise", "share", "masked_input", "unmask")
"""The four stages of Bonawitz et al.'s protocol, in order."""


@dataclass(frozen=True)
class RoundSetup:
    """Public parameters of one round, fixed by the server before the first stage.

    ``cohort`` are the selected client ids in order; a client's Shamir point is its
    position in ``cohort`` plus one. ``graph_seed`` fixes the neighbour graph.
    """

    round_num: int
    cohort: tuple[int, ...]
    k: int
    t: int
    length: int
    bits: int = 32
    graph_seed: int = 0

    @property
    def params(self) -> GraphParams:
        return GraphParams(len(self.cohort), self.k, self.t)

    def point(self, cid: int) -> int:
        return self._points[cid]

    @cached_property
    def _points(self) -> dict[int, int]:
        return {c: i + 1 for i, c in enumerate(self.cohort)}

    def graph(self) -> dict[int, tuple[int, ...]]:
        """Neighbour ids of every cohort member."""
        return self._graph

    @cached_property
    def _graph(self) -> dict[int, tuple[int, ...]]:
        adj = neighbours(len(self.cohort), self.k, self.graph_seed)
        return {self.cohort[u]: tuple(self.cohort[v] for v in vs) for u, vs in enumerate(adj)}


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0, client to server: two X25519 public keys (share encryption, masking)."""

    client_id: int
    round_num: int
    enc_pk: bytes
    mask_pk: bytes

    def nbytes(self) -> int:
        return 8 + len(self.enc_pk) + len(self.mask_pk)


@dataclass(frozen=True)
class KeyRoster:
    """Stage 0, server to clients: the public keys of every client that advertised."""

    round_num: int
    keys: dict[int, tuple[bytes, bytes]]


@dataclass(frozen=True)
class ShareKeys:
    """Stage 1, client to server: encrypted shares for each neighbour, and a commitment
    to the self-mask seed (checked after reconstruction)."""

    client_id: int
    round_num: int
    seed_commitment: bytes
    ciphertexts: dict[int, bytes]

    def nbytes(self) -> int:
        return 8 + len(self.seed_commitment) + sum(4 + len(c) for c in self.ciphertexts.values())


@dataclass(frozen=True)
class ShareInbox:
    """Stage 1, server to one client: the ciphertexts addressed to it, by sender.

    ``factor`` (in ``[0, 1]``) is what the recipient multiplies its input by before it encodes
    and masks it: an asynchronous buffer's staleness weight, which only the client can apply to
    a vector the server never sees. A client whose input is already encoded accepts only 1.
    """

    round_num: int
    recipient: int
    ciphertexts: dict[int, bytes]
    factor: float = 1.0


@dataclass(frozen=True)
class MaskedInput:
    """Stage 2, client to server: the masked vector, ring words of ``bits`` bits."""

    client_id: int
    round_num: int
    vector: npt.NDArray[Any]

    def nbytes(self) -> int:
        return 8 + int(self.vector.nbytes)


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 3, server to survivors: who sent a masked input and who dropped after sharing."""

    round_num: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 3, client to server: its share of each surviving neighbour's self-mask seed
    and of each dropped neighbour's mask key; never both for the same neighbour."""

    client_id: int
    round_num: int
    seed_shares: dict[int, npt.NDArray[np.uint64]] = field(default_factory=dict)
    key_shares: dict[int, npt.NDArray[np.uint64]] = field(default_factory=dict)

    def nbytes(self) -> int:
        return 8 + sum(4 + 4 * s.size for s in (*self.seed_shares.values(), *self.key_shares.values()))
