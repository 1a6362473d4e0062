"""Update codecs: exact encoder/decoder pairs on one tensor, as pure NumPy maths.

Each codec turns a float32 tensor into a few compact flat arrays (its *parts*) and back.
Randomness is always drawn from the generator handed in, so a run's seed fixes it.

* ``float32`` — the reference: the tensor as is.
* ``fp16`` / ``bf16`` — half precision (IEEE binary16; bfloat16 by round-to-nearest-even
  of the upper 16 bits). Relative error at most 2^-11 / 2^-8.
* ``int8`` — symmetric linear quantisation with one scale per tensor or per output
  channel (row); stochastic rounding makes it unbiased (Gupta et al., "Deep Learning with
  Limited Numerical Precision", ICML 2015). Error below one step ``scale``.
* ``qsgd`` — QSGD with ``s`` levels per bucket (Alistarh et al., "QSGD:
  Communication-Efficient SGD via Gradient Quantization and Encoding", NeurIPS 2017):
  unbiased, levels bit-packed, error below ``bucket_norm / s`` per value.
* ``sign`` — 1-bit sign scaled by the mean magnitude (EF-SignSGD: Karimireddy et al.,
  "Error Feedback Fixes SignSGD and other Gradient Compression Schemes", ICML 2019);
  biased, meant to run with error feedback.
* ``topk`` / ``randk`` — keep the ``k`` fraction of largest / random coordinates
  (Lin et al., "Deep Gradient Compression", ICLR 2018; Stich et al., "Sparsified SGD with
  Memory", NeurIPS 2018). Random-k sends a seed instead of its indices; with ``rescale``
  it multiplies by ``n/K`` and is unbiased.
* rotation — a random Hadamard rotation before a quantiser spreads a vector's energy
  evenly over its coordinates (Suresh et al., "Distributed Mean Estimation with Limited
  Communication", ICML 2017). The rotation is orthogonal, so the L2 error is the inner
  codec's.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedge.compression.wire import Parts
from fedge.core.errors import ConfigError, ValidationError

F32 = npt.NDArray[np.float32]
Shape = tuple[int, ...]


class Codec:
    """Encoder/decoder pair of one tensor; ``biased`` codecs want error feedback."""

    name: str = "codec"
    biased: bool = False

    def encode(self, x: F32, rng: np.random.Generator) -> Parts:
        raise NotImplementedError

    def decode(self, parts: Parts, shape: Shape) -> F32:
        raise NotImplementedError

    def roundtrip(self, x: F32, rng: np.random.Generator) -> F32:
        """``decode(encode(x))``: what the receiver will see."""
        return self.decode(self.encode(x, rng), tuple(x.shape))


def _parts(parts: Parts, count: int, codec: str) -> Parts:
    if len(parts) != count:
        raise ValidationError(f"{codec} tensor has {len(parts)} parts, expected {count}")
    return parts


def _size(shape: Shape) -> int:
    return math.prod(shape)


def _expect(arr: npt.NDArray[np.generic], n: int, what: str) -> None:
    if arr.size != n:
        raise ValidationError(f"{what} has {arr.size} values, expected {n}")


def index_dtype(n: int) -> type[np.unsignedinteger]:
    """The smallest unsigned integer type that holds indices below ``n``."""
    if n <= 1 << 8:
        return np.uint8
    if n <= 1 << 16:
        return np.uint16
    return np.uint32


def pack_bits(values: npt.NDArray[np.integer], width: int) -> npt.NDArray[np.uint8]:
    """Pack non-negative integers below ``2**width`` into ``ceil(n * width / 8)`` bytes."""
    v = np.asarray(values, dtype=np.uint32).ravel()
    bits = ((v[:, None] >> np.arange(width, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(bits.ravel(), bitorder="little")


def unpack_bits(packed: npt.NDArray[np.uint8], width: int, n: int) -> npt.NDArray[np.uint32]:
    if packed.size * 8 < n * width:
        raise ValidationError(f"bit-packed values hold {packed.size} bytes, need {n * width} bits")
    bits = np.unpackbits(packed.astype(np.uint8), count=n * width, bitorder="little")
    weights = np.left_shift(np.uint32(1), np.arange(width, dtype=np.uint32))
    out: npt.NDArray[np.uint32] = (bits.reshape(n, width).astype(np.uint32) * weights).sum(axis=1, dtype=np.uint32)
    return out


class Float32(Codec):
    name = "float32"

    def encode(self, x: F32, rng: np.random.Generator) -> Parts:
        return (np.asarray(x, dtype=np.float32).ravel(),)

    def decode(self, parts: Parts, shape: Shape) -> F32:
        (v,) = _parts(parts, 1, self.name)
        _expect(v, _size(shape), "float32 tensor")
        return v.astype(np.float32).reshape(shape)


class Float16(Codec):
    """IEEE half precision; values beyond ±65504 saturate instead of becoming Inf."""

    name = "fp16"
    MAX = float(np.finfo(np.float16).max)

    def encode(self, x: F32, rng: np.random.Generator) -> Parts:
        return (np.clip(np.asarray(x, dtype=np.float32).ravel(), -self.MAX, self.MAX).astype(np.float16),)

    def decode(self, parts: Parts, shape: Shape) -> F32:
        (v,) = _parts(parts, 1, self.name)
        _expect(v, _size(shape), "fp16 tensor")
        return v.astype(np.float32).reshape(shape)


class BFloat16(Codec):
    """bfloat16: the upper half of a float32, rounded to nearest, ties to even."""

    name = "bf16"

    def encode(self, x: F32, rng: np.random.Generator) -> Parts:
        u = np.ascontiguousarray(x, dtype=np.float32).ravel().view(np.uint32).astype(np.uint64)
        rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        return (rounded.astype(np.uint16),)

    def decode(self, parts: Parts, shape: Shape) -> F32:
        (v,) = _parts(parts, 1, self.name)
        _expect(v, _size(shape), "bf16 tensor")
        return (v.astype(np.uint32) << 16).view(np.float32).reshape(shape)


def _round(v: npt.NDArray[np.float64], stochastic: bool, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Round to an integer: to nearest, or up with probability equal to the fraction."""
    if stochastic:
        return np.floor(v + rng.random(v.shape))
    return np.rint(v)


class Int8(Codec):
    """Symmetric int8 with a float32 scale ``max|x| / 127`` per tensor or per row."""

    name = "int8"

    def __init__(self, *, per_channel: bool = True, stochastic: bool = True) -> None:
        self.per_channel = per_channel
        self.stochastic = stochastic

    def _rows(self, shape: Shape) -> int:
        return shape[0] if self.per_channel and len(shape) >= 2 else 1

    def encode(self, x: F32, rng: np.random.Generator) -> Parts:
        shape = tuple(x.shape)
        m = np.asarray(x, dtype=np.float64).reshape(self._rows(shape), -1)
        scale = (np.max(np.abs(m), axis=1, initial=0.0) / 127.0).astype(np.float32)
        safe = np.where(scale > 0, scale, 1.0).astype(np.float64)[:, None]
        q = np.clip(_round(m / safe, self.stochastic, rng), -127, 127).astype(np.int8)
        return q.ravel(), scale

    def decode(self, parts: Parts, shape: Shape) -> F32:
        q, scale = _parts(parts, 2, self.name)
        _expect(q, _size(shape), "int8 tensor")
        _expect(scale, self._rows(shape), "int8 scales")
        m = q.astype(np.float32).reshape(scale.size, -1) * scale.astype(np.float32)[:, None]
        return m.reshape(shape)


class QSGD(Codec):
    """QSGD: per bucket, send the L2 norm and each value's sign and level in 0..s."""

    name = "qsgd"

    def __init__(self, *, levels: int = 16, bucket: int = 512) -> None:
        if levels < 1:
            raise ConfigError(f"compression.levels: QSGD needs at least 1 level, got {levels}")
        if bucket < 1:
            raise ConfigError(f"compression.bucket: must be >= 1, got {bucket}")
        self.levels = levels
        self.bucket = bucket
        self.width = max(1, math.ceil(math.log2(2 * levels + 1)))

    def _buckets(self, n: int) -> int:
        return max(1, -(-n // self.bucket))

    def encode(self, x: F32, rng: np.random.Generator) -> Parts:
        v = np.asarray(x, dtype=np.float64).ravel()
        nb = self._buckets(v.size)
        flat = np.zeros(nb * self.bucket)
        flat[: v.size] = v
        b = flat.reshape(nb, self.bucket)
        norm64 = np.sqrt(np.sum(b * b, axis=1))
        norm = norm64.astype(np.float32)
        norm = np.where(norm.astype(np.float64) < norm64, np.nextafter(norm, np.float32(np.inf)), norm)
        safe = np.where(norm > 0, norm, 1.0).astype(np.float64)[:, None]
        level = np.clip(np.floor(np.abs(b) / safe * self.levels + rng.random(b.shape)), 0, self.levels)
        code = (np.sign(b) * level + self.levels).astype(np.uint32).ravel()[: v.size]
        return pack_bits(code, self.width), norm.astype(np.float32)

    def decode(self, parts: Parts, shape: Shape) -> F32:
        packed, norm = _parts(parts, 2, self.name)
        n = _size(shape)
        _expect(norm, self._buckets(n), "qsgd norms")
        code = unpack_bits(packed.astype(np.uint8), self.width, n).astype(np.float64) - self.levels
        per = np.repeat(norm.astype(np.float64), self.bucket)[:n]
        return (code * per / self.levels).astype(np.float32).reshape(shape)


class Sign(Codec):
    """1-bit signs, scaled by the tensor's mean absolute value (EF-SignSGD)."""

    name = "sign"
    biased = True

    def encode(self, x: F32, rng: np.random.Generator) -> Parts:
        v = np.asarray(x, dtype=np.float32).ravel()
        scale = np.asarray([np.mean(np.abs(v), dtype=np.float64) if v.size else 0.0], dtype=np.float32)
        return np.packbits(v >= 0, bitorder="little"), scale

    def decode(self, parts: Parts, shape: Shape) -> F32:
        packed, scale = _parts(parts, 2, self.name)
        n = _size(shape)
        _expect(scale, 1, "sign scale")
        if packed.size * 8 < n:
            raise ValidationError(f"sign tensor holds {packed.size} bytes, need {n} bits")
        bits = np.unpackbits(packed.astype(np.uint8), count=n, bitorder="little")
        out: F32 = (scale[0] * (2.0 * bits.astype(np.float32) - 1.0)).astype(np.float32)
        return out.reshape(shape)


def kept(n: int, k: float) -> int:
    """How many of ``n`` coordinates a ``k`` fraction keeps (at least one)."""
    return min(n, max(1, math.ceil(k * n))) if n else 0


def check_fraction(k: float) -> float:
    if not (isinstance(k, int | float) and 0 < k <= 1):
        raise ConfigError(f"compression.k: the kept fraction must be in (0, 1], got {k!r}")
    return float(k)


class TopK(Codec):
    """The ``k`` fraction of largest-magnitude values and their indices."""

    name = "topk"
    biased = True

    def __init__(self, *, k: float = 0.01) -> None:
        self.k = check_fraction(k)

    def encode(self, x: F32, rng: np.random.Generator) -> Parts:
        v = np.asarray(x, dtype=np.float32).ravel()
        kk = kept(v.size, self.k)
        idx = np.sort(np.argpartition(-np.abs(v), kk - 1)[:kk]) if kk < v.size else np.arange(v.size)
        return idx.astype(index_dtype(v.size)), v[idx]

    def decode(self, parts: Parts, shape: Shape) -> F32:
        idx, val = _parts(parts, 2, self.name)
        n = _size(shape)
        if idx.size != val.size or (idx.size and int(idx.max()) >= n):
            raise ValidationError(f"topk tensor has indices that do not fit {n} values")
        out = np.zeros(n, dtype=np.float32)
        out[idx.astype(np.int64)] = val.astype(np.float32)
        return out.reshape(shape)


class RandK(Codec):
    """A random ``k`` fraction of the values; the indices travel as a 64-bit seed."""

    name = "randk"
    biased = True

    def __init__(self, *, k: float = 0.01, rescale: bool = False) -> None:
        self.k = check_fraction(k)
        self.rescale = rescale

    @staticmethod
    def _indices(seed: int, n: int, kk: int) -> npt.NDArray[np.int64]:
        return np.sort(np.random.default_rng(seed).choice(n, size=kk, replace=False))

    def encode(self, x: F32, rng: np.random.Generator) -> Parts:
        v = np.asarray(x, dtype=np.float32).ravel()
        kk = kept(v.size, self.k)
        seed = int(rng.integers(0, 2**63))
        idx = self._indices(seed, v.size, kk)
        factor = np.float32(v.size / kk) if self.rescale and kk else np.float32(1.0)
        return np.asarray([seed], dtype=np.uint64), v[idx] * factor

    def decode(self, parts: Parts, shape: Shape) -> F32:
        seed, val = _parts(parts, 2, self.name)
        n = _size(shape)
        _expect(seed, 1, "randk seed")
        if val.size > n:
            raise ValidationError(f"randk tensor has {val.size} values for {n} coordinates")
        out = np.zeros(n, dtype=np.float32)
        out[self._indices(int(seed[0]), n, val.size)] = val.astype(np.float32)
        return out.reshape(shape)


def hadamard(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Orthonormal fast Walsh-Hadamard transform of a length-2^m vector (its own inverse)."""
    n = x.size
    y = np.array(x, dtype=np.float64)
    h = 1
    while h < n:
        y = y.reshape(-1, 2, h)
        y = np.stack([y[:, 0] + y[:, 1], y[:, 0] - y[:, 1]], axis=1).reshape(n)
        h *= 2
    return y / math.sqrt(n) if n else y


class Rotated(Codec):
    """Random Hadamard rotation (signs from a sent seed), then the inner codec."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.biased = inner.biased
        self.name = f"rotated-{inner.name}"

    @staticmethod
    def _signs(seed: int, m: int) -> npt.NDArray[np.float64]:
        return np.random.default_rng(seed).integers(0, 2, m).astype(np.float64) * 2 - 1

    def encode(self, x: F32, rng: np.random.Generator) -> Parts:
        v = np.asarray(x, dtype=np.float64).ravel()
        m = 1 << max(0, (v.size - 1).bit_length())
        seed = int(rng.integers(0, 2**63))
        padded = np.zeros(m)
        padded[: v.size] = v
        y = hadamard(padded * self._signs(seed, m)).astype(np.float32)
        return (np.asarray([seed], dtype=np.uint64), *self.inner.encode(y, rng))

    def decode(self, parts: Parts, shape: Shape) -> F32:
        if len(parts) < 2:
            raise ValidationError("rotated tensor lacks its seed or values")
        n = _size(shape)
        m = 1 << max(0, (n - 1).bit_length())
        y = self.inner.decode(parts[1:], (m,)).astype(np.float64)
        x = self._signs(int(parts[0][0]), m) * hadamard(y)
        return x[:n].astype(np.float32).reshape(shape)


CODECS = ("float32", "fp16", "bf16", "int8", "qsgd", "sign", "topk", "randk")
"""Every codec name, in the order of their wire ids."""
ROTATABLE = ("int8", "qsgd", "sign")


def make_codec(
    name: str,
    *,
    k: float = 0.01,
    levels: int = 16,
    bucket: int = 512,
    per_channel: bool = True,
    stochastic: bool = True,
    rescale: bool = False,
    rotate: bool = False,
) -> Codec:
    """Build a codec by name; an unknown name or a bad parameter is a one-line ConfigError."""
    codec: Codec
    if name == "float32":
        codec = Float32()
    elif name == "fp16":
        codec = Float16()
    elif name == "bf16":
        codec = BFloat16()
    elif name == "int8":
        codec = Int8(per_channel=per_channel and not rotate, stochastic=stochastic)
    elif name == "qsgd":
        codec = QSGD(levels=levels, bucket=bucket)
    elif name == "sign":
        codec = Sign()
    elif name == "topk":
        codec = TopK(k=k)
    elif name == "randk":
        codec = RandK(k=k, rescale=rescale)
    else:
        raise ConfigError(f"unknown codec {name!r}; valid: {', '.join(CODECS)}")
    if rotate:
        if name not in ROTATABLE:
            raise ConfigError(f"compression.rotate: only {', '.join(ROTATABLE)} can be rotated, not {name!r}")
        return Rotated(codec)
    return codec


def codec_id(codec: Codec) -> int:
    """The codec's wire id: its index in :data:`CODECS`, plus 16 when rotated."""
    if isinstance(codec, Rotated):
        return 16 + CODECS.index(codec.inner.name)
    return CODECS.index(codec.name)
