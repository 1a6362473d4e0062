"""The byte format of an encoded update: what is really sent, and so what is counted.

A message is a list of tensors, each encoded by a codec into a few flat NumPy arrays
(quantised values, indices, scales, a seed). The layout is::

    magic 'FC' | version | codec id | varint tensor count | varint name count + names
    per tensor: varint ndim, varint dims, varint part count,
                per part: dtype code (1 byte), varint length, raw little-endian bytes

Lengths and dimensions are LEB128 varints, so the framing of a small model costs a few
dozen bytes, not kilobytes (``np.savez`` would add a zip entry per array).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ValidationError

MAGIC = b"FC"
VERSION = 1

_DTYPES: tuple[np.dtype[np.generic], ...] = tuple(
    np.dtype(t).newbyteorder("<") for t in ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "f2", "f4", "f8")
)
_CODE = {dt: i for i, dt in enumerate(_DTYPES)}

Parts = tuple[npt.NDArray[np.generic], ...]


@dataclass
class Message:
    """Decoded form of a message: the codec id, named groups of tensors and their parts."""

    codec: int
    names: list[str]
    shapes: list[tuple[int, ...]]
    parts: list[Parts]


def _varint(n: int, out: bytearray) -> None:
    if n < 0:
        raise ValueError(f"varint of negative {n}")
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ValidationError(f"encoded update is truncated at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValidationError("encoded update has a malformed length field")


def pack(codec: int, names: Sequence[str], shapes: Sequence[tuple[int, ...]], parts: Sequence[Parts]) -> bytes:
    """Serialise tensors' encoded parts into one message."""
    out = bytearray(MAGIC)
    out += bytes([VERSION, codec])
    _varint(len(parts), out)
    _varint(len(names), out)
    for name in names:
        raw = name.encode()
        _varint(len(raw), out)
        out += raw
    for shape, tensor_parts in zip(shapes, parts, strict=True):
        _varint(len(shape), out)
        for d in shape:
            _varint(d, out)
        _varint(len(tensor_parts), out)
        for arr in tensor_parts:
            a = np.ascontiguousarray(arr).ravel()
            dt = a.dtype.newbyteorder("<")
            if dt not in _CODE:
                raise TypeError(f"cannot send arrays of dtype {a.dtype}")
            out.append(_CODE[dt])
            _varint(a.size, out)
            out += a.astype(dt, copy=False).tobytes()
    return bytes(out)


def unpack(data: bytes) -> Message:
    """Parse a message written by :func:`pack`; malformed input raises ValidationError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValidationError(f"encoded update must be bytes, got {type(data).__name__}")
    r = _Reader(bytes(data))
    if bytes(r.take(2)) != MAGIC:
        raise ValidationError("encoded update does not start with the fedge compression marker")
    version, codec = r.take(2)
    if version != VERSION:
        raise ValidationError(f"encoded update has format version {version}, expected {VERSION}")
    count = r.varint()
    names = [bytes(r.take(r.varint())).decode(errors="replace") for _ in range(r.varint())]
    shapes: list[tuple[int, ...]] = []
    parts: list[Parts] = []
    for _ in range(count):
        shapes.append(tuple(r.varint() for _ in range(r.varint())))
        tensor_parts = []
        for _ in range(r.varint()):
            code = r.take(1)[0]
            if code >= len(_DTYPES):
                raise ValidationError(f"encoded update has unknown dtype code {code}")
            dt = _DTYPES[code]
            n = r.varint()
            raw = r.take(n * dt.itemsize)
            tensor_parts.append(np.frombuffer(raw, dtype=dt).copy())
        parts.append(tuple(tensor_parts))
    if r.pos != len(r.data):
        raise ValidationError(f"encoded update has {len(r.data) - r.pos} trailing bytes")
    return Message(codec=codec, names=names, shapes=shapes, parts=parts)
