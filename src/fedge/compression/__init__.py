"""Update compression: codecs as pure maths, and the pipeline transforms that use them.

Its :data:`HOOKS` give :mod:`fedge.plugins` the ``[compression]`` config section and its
transforms, at the encode stage (after privacy, before secure aggregation). See ``docs/compression.md``.
"""

from fedge.compression.codecs import (
    CODECS,
    QSGD,
    BFloat16,
    Codec,
    Float16,
    Float32,
    Int8,
    RandK,
    Rotated,
    Sign,
    TopK,
    hadamard,
    make_codec,
)
from fedge.compression.config import CompressionConfig, build_transforms, transforms_for
from fedge.compression.transforms import Compress, CompressDownlink, decode_tensors, encode_tensors
from fedge.plugins import Hooks, Stage

HOOKS = Hooks(sections={"compression": CompressionConfig}, transforms=[(Stage.ENCODE, transforms_for)])

__all__ = [
    "CODECS",
    "HOOKS",
    "QSGD",
    "BFloat16",
    "Codec",
    "Compress",
    "CompressDownlink",
    "CompressionConfig",
    "Float16",
    "Float32",
    "Int8",
    "RandK",
    "Rotated",
    "Sign",
    "TopK",
    "build_transforms",
    "decode_tensors",
    "encode_tensors",
    "hadamard",
    "make_codec",
    "transforms_for",
]
