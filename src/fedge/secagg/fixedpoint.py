"""Fixed-point encoding of real vectors into the ring Z_{2^b}, with stochastic rounding.

Bonawitz et al., CCS 2017, section 3 (inputs are vectors in Z_R). A value ``x`` is
clipped to ``[-clip, clip]``, multiplied by ``scale`` and rounded stochastically
(up with probability equal to the fractional part, so the encoding is unbiased), then
stored modulo 2^b as an unsigned word (two's complement). Sums of encodings wrap
modulo 2^b like the masks do; the sum of ``n`` encodings is decoded exactly as long as
``n * (clip * scale + 1) < 2^(b-1)``, which :func:`check_overflow` enforces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ConfigError

RING_DTYPES: dict[int, type[np.unsignedinteger[Any]]] = {32: np.uint32, 64: np.uint64}
_SIGNED: dict[int, type[np.signedinteger[Any]]] = {32: np.int32, 64: np.int64}


def ring_dtype(bits: int) -> type[np.unsignedinteger[Any]]:
    if bits not in RING_DTYPES:
        raise ConfigError(f"secagg.bits: the ring must be 32 or 64 bits, got {bits}")
    return RING_DTYPES[bits]


def max_scale(n: int, clip: float, bits: int = 32) -> float:
    """The largest scale at which the sum of ``n`` encodings of ``[-clip, clip]`` cannot wrap
    (and each scaled value is still an exact float64 integer)."""
    if n < 1 or not clip > 0:
        raise ConfigError(f"secagg: need n >= 1 and clip > 0, got n={n}, clip={clip}")
    per_client = min(((1 << (bits - 1)) - 1) // n, 1 << 52)
    return max(0.0, (per_client - 1) / clip)


def check_overflow(n: int, clip: float, scale: float, bits: int = 32) -> None:
    """Raise :class:`ConfigError` when ``n`` clipped encodings could overflow the ring."""
    ring_dtype(bits)
    worst = n * (int(np.ceil(clip * scale)) + 1)
    if not scale > 0 or worst >= 1 << (bits - 1):
        raise ConfigError(
            f"secagg: clip {clip} x scale {scale:.6g} x {n} clients reaches {worst}, which "
            f"overflows the {bits}-bit ring (limit 2^{bits - 1}); lower clip or scale"
        )


def encode(
    x: npt.NDArray[np.floating[Any]], *, clip: float, scale: float, rng: np.random.Generator, bits: int = 32
) -> npt.NDArray[Any]:
    """Clip, scale and stochastically round ``x`` into ring words of ``bits`` bits."""
    v = np.clip(np.asarray(x, dtype=np.float64), -clip, clip)
    v *= scale
    v += rng.random(v.shape)
    np.floor(v, out=v)
    return v.astype(np.int64).astype(ring_dtype(bits))


def decode(words: npt.NDArray[np.unsignedinteger[Any]], *, scale: float, bits: int = 32) -> npt.NDArray[np.float64]:
    """The signed value of ring words (a sum of encodings) divided by ``scale``."""
    signed = np.asarray(words, dtype=ring_dtype(bits)).view(_SIGNED[bits])
    return signed.astype(np.float64) / scale
