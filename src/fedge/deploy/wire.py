"""What travels between server and nodes: bundles of tensors and plain values, in chunks.

A *bundle* is any tree of ``None``/bool/int/float/str/bytes, lists, string-keyed dicts
and NumPy arrays (a model's parameters, SCAFFOLD's control variate, a compressed
payload). Its :class:`~fedge.deploy.proto.fedge_pb2.BundleHeader` holds the tree with
every array replaced by a reference, each array's dtype and shape, and the SHA-256 of
each fixed-size chunk of the concatenated raw little-endian array bytes. The chunks
travel separately, so no gRPC message-size limit is ever hit. The receiver keeps each
chunk only once its checksum passes and builds the arrays when the last one is in, so
what it holds is what has arrived and been verified — never a size the header merely
claims — and the arrays replace the chunks as they are built (never a second whole
copy). Nothing is pickled: decoding network data cannot run code.

Content-addressed chunks as in Flower's deployment runtime (Beutel et al., "Flower: A
Friendly Federated Learning Research Framework", 2020).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import TransportError
from fedge.deploy.proto import pb

DEFAULT_CHUNK = 2 * 1024 * 1024
MAX_CHUNK = 8 * 1024 * 1024
INLINE_BYTES = 1 << 20
"""A bundle that fits one chunk of at most this many bytes travels inside the message that announces it
(a task inside its Subscribe message, an update inside its Push header): a small model costs no extra call."""
DTYPES = frozenset(
    {"float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"}
)
MAX_DIMS = 8


class WireError(TransportError):
    """A message is malformed: bad structure, dtype, size or checksum."""


@dataclass
class Outgoing:
    """An encoded bundle: its header and the raw bytes its chunks are cut from."""

    header: Any
    body: memoryview = field(repr=False)

    def chunks(self, start: int = 0) -> Iterator[pb.Chunk]:
        size = self.header.chunk_size
        for i in range(start, len(self.header.chunk_sha256)):
            yield pb.Chunk(index=i, data=bytes(self.body[i * size : (i + 1) * size]))


def _to_value(obj: Any, arrays: list[npt.NDArray[Any]], depth: int = 0) -> Any:
    if depth > 32:
        raise WireError("bundle nests deeper than 32 levels")
    v = pb.Value()
    if obj is None:
        v.null = True
    elif isinstance(obj, bool | np.bool_):
        v.b = bool(obj)
    elif isinstance(obj, int | np.integer):
        v.i = int(obj)
    elif isinstance(obj, float | np.floating):
        v.f = float(obj)
    elif isinstance(obj, str):
        v.s = obj
    elif isinstance(obj, bytes | bytearray):
        v.raw = bytes(obj)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.name not in DTYPES:
            raise WireError(f"arrays of dtype {obj.dtype} cannot be sent")
        v.tensor = len(arrays)
        arrays.append(obj)
    elif isinstance(obj, list | tuple):
        v.list.items.extend(_to_value(x, arrays, depth + 1) for x in obj)
        if not obj:
            v.list.SetInParent()
    elif isinstance(obj, dict):
        v.map.SetInParent()
        for k, x in obj.items():
            if not isinstance(k, str):
                raise WireError(f"bundle dict keys must be strings, got {type(k).__name__}")
            v.map.keys.append(k)
            v.map.values.append(_to_value(x, arrays, depth + 1))
    else:
        raise WireError(f"values of type {type(obj).__name__} cannot be sent")
    return v


def encode(obj: Any, chunk_size: int = DEFAULT_CHUNK) -> Outgoing:
    """Encode ``obj`` into a header and one contiguous body (a single copy of the arrays)."""
    if not 0 < chunk_size <= MAX_CHUNK:
        raise WireError(f"chunk size must be in (0, {MAX_CHUNK}], got {chunk_size}")
    arrays: list[npt.NDArray[Any]] = []
    tree = _to_value(obj, arrays)
    total = sum(int(a.nbytes) for a in arrays)
    body = bytearray(total)
    off = 0
    header = pb.BundleHeader(tree=tree, chunk_size=chunk_size, total_bytes=total)
    for a in arrays:
        if a.size:
            dst = np.frombuffer(body, dtype=a.dtype.newbyteorder("<"), count=a.size, offset=off)
            dst[...] = a.reshape(-1)
        off += a.nbytes
        header.tensors.add(dtype=a.dtype.name, shape=[int(d) for d in a.shape])
    view = memoryview(body)
    header.chunk_sha256.extend(hashlib.sha256(view[i : i + chunk_size]).digest() for i in range(0, total, chunk_size))
    return Outgoing(header, view)


class Incoming:
    """Reassembles a bundle from its header and chunks, checking each chunk's SHA-256.

    The header is checked first (dtypes, dimensions, sizes against ``max_bytes``), but
    nothing is allocated from it: a sender can claim a gigabyte and send nothing, so
    memory grows only with the chunks that arrive and pass their checksum
    (:attr:`received_bytes`). :meth:`value` builds the arrays from them once all are in.
    """

    def __init__(self, header: Any, *, max_bytes: int) -> None:
        size = header.chunk_size
        if not 0 < size <= MAX_CHUNK:
            raise WireError(f"bundle chunk size {size} outside (0, {MAX_CHUNK}]")
        specs: list[tuple[np.dtype[Any], tuple[int, ...]]] = []
        total = 0
        for t in header.tensors:
            if t.dtype not in DTYPES:
                raise WireError(f"tensor dtype {t.dtype[:20]!r} is not allowed")
            if len(t.shape) > MAX_DIMS or any(d < 0 for d in t.shape):
                raise WireError(f"tensor shape {list(t.shape)[: MAX_DIMS + 1]} is not allowed")
            dt = np.dtype(t.dtype).newbyteorder("<")
            n = math.prod(int(d) for d in t.shape) * dt.itemsize
            total += n
            if total > max_bytes:
                raise WireError(f"bundle exceeds the limit of {max_bytes} bytes")
            specs.append((dt, tuple(int(d) for d in t.shape)))
        if total != header.total_bytes:
            raise WireError(f"bundle header says {header.total_bytes} bytes, tensors make {total}")
        if len(header.chunk_sha256) != -(-total // size):
            raise WireError(
                f"bundle of {total} bytes needs {-(-total // size)} chunks, header lists {len(header.chunk_sha256)}"
            )
        self.header = header
        self.total_bytes = total
        self.received = 0
        self.received_bytes = 0
        self._chunks: list[bytes] = []
        self._arrays: list[npt.NDArray[Any]] | None = None
        self._specs = specs

    @property
    def complete(self) -> bool:
        return self.received == len(self.header.chunk_sha256)

    def add(self, chunk: Any) -> None:
        """Keep the next chunk (they must arrive in order) after checking its size and SHA-256."""
        i = chunk.index
        if i != self.received:
            raise WireError(f"chunk {i} arrived, expected chunk {self.received}")
        if i >= len(self.header.chunk_sha256):
            raise WireError(f"chunk {i} is beyond the bundle's {len(self.header.chunk_sha256)} chunks")
        data = chunk.data
        expected = min(self.header.chunk_size, self.total_bytes - i * self.header.chunk_size)
        if len(data) != expected:
            raise WireError(f"chunk {i} has {len(data)} bytes, expected {expected}")
        if hashlib.sha256(data).digest() != self.header.chunk_sha256[i]:
            raise WireError(f"chunk {i} fails its SHA-256 checksum")
        self._chunks.append(data)
        self.received += 1
        self.received_bytes += expected

    def value(self) -> Any:
        """The decoded tree; its arrays are writable and built once (later calls share them)."""
        if not self.complete:
            raise WireError(f"bundle incomplete: {self.received} of {len(self.header.chunk_sha256)} chunks")
        if self._arrays is None:
            self._arrays = self._assemble()
        return _from_value(self.header.tree, self._arrays, 0)

    def _assemble(self) -> list[npt.NDArray[Any]]:
        """Copy the chunks into one array per tensor, dropping each chunk once it is used up."""
        pending, self._chunks = self._chunks[::-1], []
        cur = memoryview(b"")
        arrays: list[npt.NDArray[Any]] = []
        for dt, shape in self._specs:
            buf = bytearray(math.prod(shape) * dt.itemsize)
            filled = 0
            while filled < len(buf):
                if not len(cur):
                    cur = memoryview(pending.pop())
                take = min(len(buf) - filled, len(cur))
                buf[filled : filled + take] = cur[:take]
                cur, filled = cur[take:], filled + take
            a = np.frombuffer(buf, dtype=dt).reshape(shape)
            arrays.append(a.astype(dt.newbyteorder("="), copy=False))
        return arrays


def _from_value(v: Any, arrays: list[npt.NDArray[Any]], depth: int) -> Any:
    if depth > 32:
        raise WireError("bundle nests deeper than 32 levels")
    kind = v.WhichOneof("kind")
    if kind is None or kind == "null":
        return None
    if kind == "tensor":
        if v.tensor >= len(arrays):
            raise WireError(f"tensor reference {v.tensor} out of range ({len(arrays)} tensors)")
        return arrays[v.tensor]
    if kind == "list":
        return [_from_value(x, arrays, depth + 1) for x in v.list.items]
    if kind == "map":
        if len(v.map.keys) != len(v.map.values):
            raise WireError("bundle map has unequal key and value counts")
        return {k: _from_value(x, arrays, depth + 1) for k, x in zip(v.map.keys, v.map.values, strict=True)}
    return getattr(v, kind)


def decode(header: Any, chunks: Iterable[pb.Chunk], *, max_bytes: int) -> Any:
    """Reassemble and decode a whole bundle (header checks, chunk checksums, tree)."""
    inc = Incoming(header, max_bytes=max_bytes)
    for c in chunks:
        inc.add(c)
    return inc.value()


def dump(msg: Any) -> bytes:
    """A protobuf message's bytes."""
    return bytes(msg.SerializeToString())


def parse(cls: type[Any], raw: bytes) -> Any:
    """Parse protobuf bytes into ``cls``, turning any decoding failure into :class:`WireError`."""
    msg = cls()
    try:
        msg.ParseFromString(raw)
    except Exception as exc:
        raise WireError(f"malformed {cls.__name__}: {type(exc).__name__}") from None
    return msg
