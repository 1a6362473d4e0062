"""Update compression: codecs as pure maths, and the pipeline transforms that use them.

Importing this package registers the ``[compression]`` config section and its
transforms (``experiment.TRANSFORM_FACTORIES``). See ``docs/compression.md``.
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
from fedge.config.schema import register_section
from fedge.experiment import TRANSFORM_FACTORIES

register_section("compression", CompressionConfig)
if transforms_for not in TRANSFORM_FACTORIES:
    TRANSFORM_FACTORIES.append(transforms_for)

__all__ = [
    "CODECS",
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
