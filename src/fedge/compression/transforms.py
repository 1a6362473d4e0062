"""Codecs as pipeline transforms: compressed uplink with error feedback, compressed downlink.

:class:`Compress` encodes a client's delta (and its extras, e.g. SCAFFOLD's control
variate delta) into one message on the client, counts ``len(message)`` as the uplink
bytes, and decodes it on the server before validation. With error feedback the part a
codec dropped is kept in the client's own ``ctx.state`` and added to the next round's
update (Seide et al., "1-Bit Stochastic Gradient Descent", Interspeech 2014; Stich et
al., NeurIPS 2018), so nothing is lost, only delayed; the server never sees it. Optionally the message is
then losslessly DEFLATE-coded (``entropy = "zlib"``): quantised deltas cluster near zero,
so their bytes have far less than 8 bits of entropy (QSGD's own Elias coding exploits the
same fact).

:class:`CompressDownlink` compresses the server → client model. The server keeps one
*reference* model, the one every client reconstructs: each round it encodes
``global - reference`` and moves the reference by the decoded difference, which is error
feedback on the server (Tang et al., "DoubleSqueeze", ICML 2019). Clients train from the
reference. A client that holds the previous rounds' reference receives the messages it
missed; one too far behind (or new) receives the reference in float32, whichever is
smaller. Bytes are counted per client from the real messages.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from fedge.compression.codecs import Codec, codec_id
from fedge.compression.wire import pack, unpack
from fedge.core.errors import ConfigError, ValidationError
from fedge.core.params import Params, flatten, nbytes, unflatten
from fedge.core.types import ClientContext, ClientUpdate
from fedge.pipeline import Downlink, RoundContext, Transform

SCOPES = ("tensor", "model")
"""What a codec sees: each tensor on its own, or the whole update as one flat vector
(one top-k budget, one QSGD norm per bucket across layers)."""
ENTROPY = ("none", "zlib")
"""Lossless coding of the encoded message (zlib's DEFLATE), after the codec."""
PAYLOAD_KEY = "compression"
RESIDUAL_KEY = "compression.residual"


def encode_tensors(
    codec: Codec, tensors: Sequence[np.ndarray], rng: np.random.Generator, names: Sequence[str] = ()
) -> tuple[bytes, Params]:
    """Encode tensors into one message; returns it and what the receiver will decode."""
    parts = [codec.encode(np.asarray(t, dtype=np.float32), rng) for t in tensors]
    shapes = [tuple(int(d) for d in t.shape) for t in tensors]
    decoded = [codec.decode(p, s) for p, s in zip(parts, shapes, strict=True)]
    return pack(codec_id(codec), names, shapes, parts), decoded


def decode_tensors(
    codec: Codec, blob: bytes, shapes: Sequence[tuple[int, ...]] | None = None
) -> tuple[list[str], Params]:
    """Decode a message of :func:`encode_tensors`; a foreign or broken one is a ValidationError.

    With ``shapes``, a tensor of any other shape is refused before anything is allocated
    for it (a forged shape cannot make the server allocate without bound).
    """
    msg = unpack(blob)
    if msg.codec != codec_id(codec):
        raise ValidationError(
            f"update was encoded with codec id {msg.codec}, the server expects {codec.name} (id {codec_id(codec)})"
        )
    if shapes is not None:
        allowed = set(shapes)
        bad = [s for s in msg.shapes if s not in allowed]
        if bad:
            raise ValidationError(f"encoded update has a tensor of shape {bad[0]}, not one of the model's")
    out = [codec.decode(p, s) for p, s in zip(msg.parts, msg.shapes, strict=True)]
    return msg.names, out


class Compress(Transform):
    """Uplink compression of each update, optionally with client-side error feedback."""

    name = "compress"
    whole_model = True

    def __init__(
        self, codec: Codec, *, error_feedback: bool | None = None, entropy: str = "none", scope: str = "tensor"
    ) -> None:
        if entropy not in ENTROPY:
            raise ConfigError(f"compression.entropy: {entropy!r} is not one of {', '.join(ENTROPY)}")
        if scope not in SCOPES:
            raise ConfigError(f"compression.scope: {scope!r} is not one of {', '.join(SCOPES)}")
        self.codec = codec
        self.error_feedback = codec.biased if error_feedback is None else error_feedback
        self.entropy = entropy
        self.scope = scope

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        names = [""] * len(update.delta)
        tensors = list(update.delta)
        for key in sorted(update.extras):
            names += [key] * len(update.extras[key])
            tensors += list(update.extras[key])
        if self.scope == "model":
            tensors = [flatten(tensors)]
        if self.error_feedback:
            residual = ctx.state.get(RESIDUAL_KEY)
            if residual is not None and [r.shape for r in residual] == [t.shape for t in tensors]:
                tensors = [t + r for t, r in zip(tensors, residual, strict=True)]
        blob, decoded = encode_tensors(
            self.codec, tensors, ctx.rng, names if update.extras or self.scope == "model" else ()
        )
        if self.error_feedback:
            ctx.state[RESIDUAL_KEY] = [(t - d).astype(np.float32) for t, d in zip(tensors, decoded, strict=True)]
        if self.entropy == "zlib":
            blob = zlib.compress(blob, 9)
        update.payload[PAYLOAD_KEY] = blob
        update.uplink_bytes = len(blob)
        update.metrics["uplink_bytes"] = float(len(blob))
        update.delta = []
        update.extras = {}
        return update

    def server(self, update: ClientUpdate, rctx: RoundContext) -> ClientUpdate:
        blob = update.payload.pop(PAYLOAD_KEY, None)
        if blob is None:
            raise ValidationError(f"update from client {update.client_id} is not {self.codec.name}-compressed")
        if self.entropy == "zlib":
            try:
                blob = zlib.decompress(blob)
            except zlib.error as exc:
                raise ValidationError(f"update from client {update.client_id} is not valid zlib data: {exc}") from None
        if self.scope == "model":
            names, tensors = self._split(update.client_id, blob, rctx)
        else:
            names, tensors = decode_tensors(self.codec, blob, rctx.spec.shapes)
        if not names:
            names = [""] * len(tensors)
        if len(names) != len(tensors):
            raise ValidationError(
                f"update from client {update.client_id} names {len(names)} tensors but carries {len(tensors)}"
            )
        update.delta = [t for n, t in zip(names, tensors, strict=True) if n == ""]
        extras: dict[str, Params] = {}
        for n, t in zip(names, tensors, strict=True):
            if n:
                extras.setdefault(n, []).append(t)
        update.extras = extras
        rctx.info.setdefault("uplink_bytes_per_client", {})[str(update.client_id)] = update.uplink_bytes
        return update

    def _split(self, cid: int, blob: bytes, rctx: RoundContext) -> tuple[list[str], Params]:
        """Model scope: one flat vector back into the delta's and each extra's tensors."""
        msg = unpack(blob)
        groups = [n for i, n in enumerate(msg.names) if i == 0 or n != msg.names[i - 1]]
        per = len(rctx.spec.shapes)
        if len(msg.names) != per * len(groups):
            raise ValidationError(
                f"update from client {cid} names {len(msg.names)} tensors, not a whole number of models of {per}"
            )
        total = rctx.spec.total * len(groups)
        _, (vector,) = decode_tensors(self.codec, blob, [(total,)])
        parts = [
            unflatten(vector[g * rctx.spec.total : (g + 1) * rctx.spec.total], rctx.spec) for g in range(len(groups))
        ]
        return list(msg.names), [t for p in parts for t in p]


class CompressDownlink(Transform):
    """Server → client model compression against a reference every client can rebuild."""

    name = "compress-downlink"

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.reference: Params | None = None
        self.held: dict[int, int] = {}
        self.log: list[tuple[int, int]] = []
        """``(round, message bytes)`` of the recent reference moves still worth resending."""

    def downlink(self, params: Params, client_ids: Sequence[int], rctx: RoundContext) -> Downlink | None:
        full = nbytes(params)
        r = rctx.round_num
        if self.reference is None or [p.shape for p in self.reference] != [p.shape for p in params]:
            self.reference = [np.array(p, dtype=np.float32) for p in params]
            self.log = []
        else:
            diff = [(p - q).astype(np.float32) for p, q in zip(params, self.reference, strict=True)]
            blob, decoded = encode_tensors(self.codec, diff, rctx.rng)
            self.reference = [(q + d).astype(np.float32) for q, d in zip(self.reference, decoded, strict=True)]
            self.log.append((r, len(blob)))
            total = 0
            for i in range(len(self.log) - 1, -1, -1):
                total += self.log[i][1]
                if total > full:
                    self.log = self.log[i + 1 :]
                    break
        first = self.log[0][0] if self.log else r + 1
        sizes: dict[int, int] = {}
        for cid in client_ids:
            h = self.held.get(cid)
            if h is not None and h + 1 >= first:
                sizes[cid] = min(full, sum(b for rr, b in self.log if rr > h))
            else:
                sizes[cid] = full
            self.held[cid] = r
        rctx.info["downlink_bytes_per_client"] = {str(c): b for c, b in sizes.items()}
        return Downlink(params=[p.copy() for p in self.reference], bytes_per_client=sizes)
