"""The client's side of secure aggregation: one pure-ish function per stage.

Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning",
CCS 2017 (figure 4, the semi-honest variant), with Bell et al.'s (CCS 2020) restriction
of masks and shares to the neighbours of the SecAgg+ graph. Each function takes the
client's :class:`ClientSecrets` and the server's message and returns the client's reply;
the secrets never leave the client except as encrypted or requested Shamir shares.

:func:`respond` is the one client-side handler of a stage message, in process (the
in-process transport's exchange) and on a device (the node): it keeps the round's input
words and secrets in the client's own state under :data:`STATE_KEY`. An asynchronous
client (FedBuff) holds its input *pending* (:func:`hold_pending`): trained before anyone knows
which buffer it lands in, it joins the first session whose setup names it, and is encoded
only at the masked-input stage, scaled by the factor the server sends it then.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

import numpy as np
import numpy.typing as npt

from fedge.core.errors import TransportError
from fedge.secagg import crypto, fixedpoint, shamir
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

STATE_KEY = "secagg"
"""Where a client's state holds its round's input words and secrets (never sent, never saved)."""
SHARE_INFO = b"fedge-secagg/share-encryption/"
MASK_INFO = b"fedge-secagg/pairwise-mask/"
SEED_LABEL = b"fedge-secagg/self-mask-seed"
_HEADER = struct.Struct(">IQQ")
CHUNKS = shamir.chunks_for(crypto.SEED_BYTES)


class ProtocolError(TransportError):
    """A protocol message is malformed, out of order or from another round."""


@dataclass
class ClientSecrets:
    """What one client keeps between the stages of one round."""

    client_id: int
    setup: RoundSetup
    enc_sk: bytes
    mask_sk: bytes
    roster: KeyRoster | None = None
    self_seed: bytes = b""
    held: dict[int, tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]] = field(default_factory=dict)
    """Shares received from each neighbour: (share of its mask key, share of its seed)."""
    answered: bool = False


def info(prefix: bytes, round_num: int) -> bytes:
    return prefix + round_num.to_bytes(8, "big")


def _check_round(what: str, got: int, setup: RoundSetup) -> None:
    if got != setup.round_num:
        raise ProtocolError(f"{what} is for round {got}, this is round {setup.round_num}")


def advertise(setup: RoundSetup, client_id: int) -> tuple[ClientSecrets, AdvertiseKeys]:
    """Stage 0: fresh X25519 key pairs for this round; the public halves go to the server."""
    if client_id not in setup.cohort:
        raise ProtocolError(f"client {client_id} is not in round {setup.round_num}'s cohort")
    enc_sk, enc_pk = crypto.new_keypair()
    mask_sk, mask_pk = crypto.new_keypair()
    secrets = ClientSecrets(client_id, setup, enc_sk, mask_sk)
    return secrets, AdvertiseKeys(client_id, setup.round_num, enc_pk, mask_pk)


def _plaintext(
    setup: RoundSetup,
    sender: int,
    recipient: int,
    key_share: npt.NDArray[np.uint64],
    seed_share: npt.NDArray[np.uint64],
) -> bytes:
    body = np.concatenate([key_share, seed_share]).astype(">u4").tobytes()
    return _HEADER.pack(setup.round_num, sender, recipient) + body


def _associated(setup: RoundSetup, sender: int, recipient: int) -> bytes:
    return _HEADER.pack(setup.round_num, sender, recipient)


def share_keys(secrets: ClientSecrets, roster: KeyRoster) -> ShareKeys:
    """Stage 1: Shamir-share the mask key and a fresh self-mask seed among live neighbours,
    each share encrypted to its recipient with AES-GCM under an X25519 + HKDF key."""
    setup = secrets.setup
    _check_round("key roster", roster.round_num, setup)
    me = secrets.client_id
    if me not in roster.keys:
        raise ProtocolError(f"client {me}'s keys are missing from the roster")
    live = [v for v in setup.graph()[me] if v in roster.keys]
    if len(live) < setup.t:
        raise ProtocolError(f"client {me} has {len(live)} live neighbours, below the threshold {setup.t}")
    secrets.roster = roster
    secrets.self_seed = crypto.random_seed()
    xs = [setup.point(v) for v in live]
    key_shares = shamir.split_secret(secrets.mask_sk, xs, setup.t)
    seed_shares = shamir.split_secret(secrets.self_seed, xs, setup.t)
    keys = crypto.agree_many(secrets.enc_sk, [roster.keys[v][0] for v in live], info(SHARE_INFO, setup.round_num))
    out: dict[int, bytes] = {}
    for j, (v, key) in enumerate(zip(live, keys, strict=True)):
        out[v] = crypto.seal(key, _plaintext(setup, me, v, key_shares[j], seed_shares[j]), _associated(setup, me, v))
    return ShareKeys(me, setup.round_num, crypto.commit(secrets.self_seed, SEED_LABEL), out)


def _open_share(
    secrets: ClientSecrets, sender: int, sealed: bytes, key: bytes
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    setup, me = secrets.setup, secrets.client_id
    try:
        plain = crypto.open_sealed(key, sealed, _associated(setup, sender, me))
    except crypto.DecryptionError as exc:
        raise ProtocolError(f"share from client {sender} to client {me}: {exc}") from None
    rnd, src, dst = _HEADER.unpack_from(plain)
    if (rnd, src, dst) != (setup.round_num, sender, me) or len(plain) != _HEADER.size + 8 * CHUNKS:
        raise ProtocolError(f"share from client {sender} to client {me} has a wrong header or length")
    body = np.frombuffer(plain[_HEADER.size :], dtype=">u4").astype(np.uint64)
    return body[:CHUNKS], body[CHUNKS:]


def masked_input(secrets: ClientSecrets, inbox: ShareInbox, words: npt.NDArray[Any]) -> MaskedInput:
    """Stage 2: keep the neighbours' shares, then send ``words`` plus the self mask plus
    a pairwise mask per neighbour that shared (added toward larger ids, subtracted toward
    smaller), all modulo 2^b."""
    setup, me = secrets.setup, secrets.client_id
    _check_round("share inbox", inbox.round_num, setup)
    if inbox.recipient != me or secrets.roster is None:
        raise ProtocolError(f"client {me} got an inbox for client {inbox.recipient} or before sharing keys")
    dtype = np.dtype(words.dtype)
    if words.ndim != 1 or words.size != setup.length or dtype.itemsize * 8 != setup.bits or dtype.kind != "u":
        raise ProtocolError(
            f"client {me}'s input has {words.size} {dtype} values, expected {setup.length} uint{setup.bits}"
        )
    roster = secrets.roster
    senders = sorted(inbox.ciphertexts)
    strangers = [u for u in senders if u not in roster.keys or u not in setup.graph()[me]]
    if strangers:
        raise ProtocolError(f"client {me} got a share from {strangers[0]}, which is not its live neighbour")
    keys = crypto.agree_many(secrets.enc_sk, [roster.keys[u][0] for u in senders], info(SHARE_INFO, setup.round_num))
    held = {u: _open_share(secrets, u, inbox.ciphertexts[u], key) for u, key in zip(senders, keys, strict=True)}
    if len(held) < setup.t:
        raise ProtocolError(f"client {me} received {len(held)} shares, below the threshold {setup.t}")
    secrets.held = held
    y = words.astype(dtype, copy=True)
    seeds = dict(
        zip(
            held,
            crypto.agree_many(secrets.mask_sk, [roster.keys[v][1] for v in held], info(MASK_INFO, setup.round_num)),
            strict=True,
        )
    )
    crypto.add_masks(
        y,
        add=[secrets.self_seed, *(s for v, s in seeds.items() if v > me)],
        subtract=[s for v, s in seeds.items() if v < me],
    )
    return MaskedInput(me, setup.round_num, y)


def unmask(secrets: ClientSecrets, request: UnmaskRequest) -> UnmaskResponse:
    """Stage 3: for each neighbour that shared, reveal the share of its self-mask seed if it
    survived, or of its mask key if it dropped, never both; answer only once."""
    setup, me = secrets.setup, secrets.client_id
    _check_round("unmask request", request.round_num, setup)
    survivors, dropped = set(request.survivors), set(request.dropped)
    if secrets.answered:
        raise ProtocolError(f"client {me} already answered an unmask request this round")
    if survivors & dropped:
        raise ProtocolError("unmask request lists a client as both survivor and dropped")
    if len(survivors) < setup.t or me not in survivors:
        raise ProtocolError(
            f"unmask request names {len(survivors)} survivors (threshold {setup.t}) "
            f"{'' if me in survivors else 'and not this client'}".rstrip()
        )
    secrets.answered = True
    seed = {u: s for u, (_, s) in secrets.held.items() if u in survivors}
    keys = {u: k for u, (k, _) in secrets.held.items() if u in dropped}
    return UnmaskResponse(me, setup.round_num, seed, keys)


PENDING = -1
"""The round of a held input that waits for the session it will join (asynchronous buffers)."""


class RoundInput(TypedDict):
    """A client's part of one round, in its state under :data:`STATE_KEY`.

    ``words`` are the encoded input; a pending input has none yet, only the real ``values``, the
    ``seed`` of its stochastic rounding and the fixed-point ``clip`` and ``scale`` to encode them with.
    """

    round_num: int
    words: npt.NDArray[Any] | None
    secrets: ClientSecrets | None
    values: NotRequired[npt.NDArray[np.float64]]
    seed: NotRequired[int]
    clip: NotRequired[float]
    scale: NotRequired[float]


REQUESTS: dict[str, type] = {
    "advertise": RoundSetup,
    "share": KeyRoster,
    "masked_input": ShareInbox,
    "unmask": UnmaskRequest,
}
"""The server's message of each stage."""


def _round_of(request: Any) -> int:
    return int(request.round_num)


def hold_input(state: dict[str, Any], round_num: int, words: npt.NDArray[Any]) -> None:
    """Keep this round's fixed-point input words in the client's state for the protocol."""
    state[STATE_KEY] = RoundInput(round_num=round_num, words=words, secrets=None)


def hold_pending(
    state: dict[str, Any], values: npt.NDArray[np.float64], seed: int, *, clip: float, scale: float
) -> None:
    """Keep an input that is not yet encoded (see :data:`PENDING`) for the session it will join."""
    state[STATE_KEY] = RoundInput(
        round_num=PENDING, words=None, secrets=None, values=values, seed=seed, clip=clip, scale=scale
    )


def _late_words(mine: dict[str, Any], factor: float, bits: int) -> npt.NDArray[Any]:
    """A pending input's words: its values times ``factor``, encoded with its own rounding seed."""
    if "values" not in mine:
        if factor != 1.0:
            raise ProtocolError(f"this client's input is already encoded and cannot be scaled by {factor}")
        words: npt.NDArray[Any] = mine["words"]
        return words
    return fixedpoint.encode(
        factor * mine["values"],
        clip=mine["clip"],
        scale=mine["scale"],
        rng=np.random.default_rng(mine["seed"]),
        bits=bits,
    )


def respond(stage: str, request: Any, *, client_id: int, state: dict[str, Any]) -> Any:
    """Answer the server's ``stage`` message from the client's own state.

    Raises :class:`ProtocolError` for a message of the wrong kind, from another round than
    the client's input, or out of order; the client then withdraws from the stage. A pending
    input is bound to the first session that sends its setup, and to no other. After the
    unmask answer the round's words and secrets are dropped from the state.
    """
    if type(request) is not REQUESTS.get(stage):
        raise ProtocolError(f"unexpected {type(request).__name__} in stage {stage!r}")
    round_num = _round_of(request)
    mine = state.get(STATE_KEY)
    if isinstance(request, RoundSetup) and isinstance(mine, dict) and mine.get("round_num") == PENDING:
        mine["round_num"] = round_num
    if not isinstance(mine, dict) or mine.get("round_num") != round_num:
        raise ProtocolError(f"client {client_id} has no input for round {round_num}")
    if isinstance(request, RoundSetup):
        mine["secrets"], keys = advertise(request, client_id)
        return keys
    secrets = mine.get("secrets")
    if not isinstance(secrets, ClientSecrets):
        raise ProtocolError(f"client {client_id} got stage {stage!r} before advertising its keys")
    if isinstance(request, KeyRoster):
        return share_keys(secrets, request)
    if isinstance(request, ShareInbox):
        factor = float(request.factor)
        if not 0.0 <= factor <= 1.0:
            raise ProtocolError(f"client {client_id} was asked to scale its input by {factor}, outside [0, 1]")
        return masked_input(secrets, request, _late_words(mine, factor, secrets.setup.bits))
    assert isinstance(request, UnmaskRequest)
    answer = unmask(secrets, request)
    del state[STATE_KEY]
    return answer
