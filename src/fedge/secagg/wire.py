"""Bytes for the protocol's messages, without pickle: what a transport sends between stages.

A message is ``b"FSA1"``, its type's index in :data:`MESSAGE_TYPES`, a JSON header with
every field (integers and finite floats as numbers, byte strings as base64, integer-keyed dicts as pairs,
tuples tagged) and then the raw bytes of its NumPy arrays, described in the header by
dtype and shape. Decoding builds only the message dataclasses and plain values, so
untrusted input cannot run code; anything malformed raises :class:`WireError`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import struct
from typing import Any

import numpy as np

from fedge.core.errors import TransportError
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

MAGIC = b"FSA1"
MESSAGE_TYPES: tuple[type, ...] = (
    RoundSetup,
    AdvertiseKeys,
    KeyRoster,
    ShareKeys,
    ShareInbox,
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
)
_ALLOWED_DTYPES = {"<u4", "<u8", ">u4", ">u8"}
_HEAD = struct.Struct(">4sBI")


class WireError(TransportError):
    """A secure-aggregation message could not be decoded."""


def _enc(v: Any, blobs: list[bytes]) -> Any:
    if isinstance(v, bool) or v is None:
        raise WireError(f"unsupported value {v!r}")
    if isinstance(v, int | str):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise WireError(f"unsupported value {v!r}")
        return v
    if isinstance(v, bytes):
        return {"b": base64.b64encode(v).decode()}
    if isinstance(v, np.ndarray):
        arr = np.ascontiguousarray(v)
        blobs.append(arr.tobytes())
        return {"a": len(blobs) - 1, "dtype": arr.dtype.str, "shape": list(arr.shape)}
    if isinstance(v, tuple):
        return {"t": [_enc(x, blobs) for x in v]}
    if isinstance(v, dict):
        return {"d": [[_enc(k, blobs), _enc(x, blobs)] for k, x in v.items()]}
    raise WireError(f"unsupported value of type {type(v).__name__}")


def _dec(v: Any, blobs: list[bytes]) -> Any:
    if isinstance(v, int | str) and not isinstance(v, bool):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise WireError("non-finite number")
        return v
    if not isinstance(v, dict) or len(v) not in (1, 3):
        raise WireError("malformed field")
    if "b" in v:
        return base64.b64decode(v["b"], validate=True)
    if "t" in v:
        return tuple(_dec(x, blobs) for x in v["t"])
    if "d" in v:
        return {_dec(k, blobs): _dec(x, blobs) for k, x in v["d"]}
    if "a" in v:
        if v["dtype"] not in _ALLOWED_DTYPES:
            raise WireError(f"array dtype {v['dtype']!r} is not an unsigned integer type")
        arr = np.frombuffer(blobs[int(v["a"])], dtype=np.dtype(v["dtype"]))
        return arr.reshape([int(s) for s in v["shape"]]).copy()
    raise WireError("malformed field")


def pack(msg: Any) -> bytes:
    """The bytes of one protocol message."""
    if type(msg) not in MESSAGE_TYPES:
        raise WireError(f"{type(msg).__name__} is not a secure-aggregation message")
    blobs: list[bytes] = []
    fields = {f.name: _enc(getattr(msg, f.name), blobs) for f in dataclasses.fields(msg)}
    header = json.dumps({"fields": fields, "blobs": [len(b) for b in blobs]}).encode()
    return _HEAD.pack(MAGIC, MESSAGE_TYPES.index(type(msg)), len(header)) + header + b"".join(blobs)


def unpack(data: bytes) -> Any:
    """Decode what :func:`pack` produced; :class:`WireError` on anything else."""
    try:
        magic, kind, n = _HEAD.unpack_from(data)
        if magic != MAGIC or kind >= len(MESSAGE_TYPES):
            raise WireError("not a secure-aggregation message")
        start = _HEAD.size + n
        header = json.loads(data[_HEAD.size : start])
        blobs, at = [], start
        for size in header["blobs"]:
            blobs.append(data[at : at + int(size)])
            at += int(size)
        if at != len(data):
            raise WireError(f"message is {len(data)} bytes, its header describes {at}")
        cls = MESSAGE_TYPES[kind]
        names = {f.name for f in dataclasses.fields(cls)}
        if set(header["fields"]) != names:
            raise WireError(f"{cls.__name__} fields do not match")
        return cls(**{k: _dec(v, blobs) for k, v in header["fields"].items()})
    except WireError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        raise WireError(f"malformed secure-aggregation message: {exc}") from None
