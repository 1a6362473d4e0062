"""The ``[compression]`` config section and the transforms it builds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedge.compression.codecs import CODECS, Codec, check_fraction, make_codec
from fedge.compression.transforms import Compress, CompressDownlink
from fedge.config.schema import opt
from fedge.core.errors import ConfigError
from fedge.pipeline import Transform


@dataclass
class CompressionConfig:
    codec: str = opt("none", "uplink codec of client updates ('none' = plain float32)", choices=("none", *CODECS))
    downlink: str = opt(
        "none", "codec of the server -> client model difference ('none' = float32)", choices=("none", *CODECS)
    )
    k: float = opt(0.01, "topk/randk: fraction of coordinates kept, in (0, 1]", min=0, exclusive_min=True, max=1)
    levels: int = opt(16, "qsgd: quantisation levels s", min=1)
    bucket: int = opt(512, "qsgd: values per bucket sharing one norm", min=1)
    per_channel: bool = opt(True, "int8: one scale per output channel (row) instead of per tensor")
    stochastic: bool = opt(True, "int8: stochastic (unbiased) rounding instead of round-to-nearest")
    rescale: bool = opt(False, "randk: multiply kept values by n/k so the codec is unbiased")
    rotate: bool = opt(False, "random Hadamard rotation before int8/qsgd/sign")
    scope: str = opt(
        "tensor",
        "encode each tensor on its own, or the whole update as one vector (one top-k budget across layers)",
        choices=("tensor", "model"),
    )
    entropy: str = opt("none", "lossless coding of each encoded update after the codec", choices=("none", "zlib"))
    error_feedback: str = opt(
        "auto",
        "keep what the codec dropped on the client and resend it later (auto = on for sign, topk, randk)",
        choices=("auto", "on", "off"),
    )


def codec_from(cfg: CompressionConfig, name: str) -> Codec:
    check_fraction(cfg.k)
    return make_codec(
        name,
        k=cfg.k,
        levels=cfg.levels,
        bucket=cfg.bucket,
        per_channel=cfg.per_channel,
        stochastic=cfg.stochastic,
        rescale=cfg.rescale,
        rotate=cfg.rotate,
    )


def build_transforms(cfg: CompressionConfig) -> list[Transform]:
    """The transforms a ``[compression]`` section asks for (none by default)."""
    if cfg.error_feedback not in ("auto", "on", "off"):
        raise ConfigError(f"compression.error_feedback: {cfg.error_feedback!r} is not one of auto, on, off")
    out: list[Transform] = []
    if cfg.codec != "none":
        ef = None if cfg.error_feedback == "auto" else cfg.error_feedback == "on"
        out.append(Compress(codec_from(cfg, cfg.codec), error_feedback=ef, entropy=cfg.entropy, scope=cfg.scope))
    if cfg.downlink != "none":
        out.append(CompressDownlink(codec_from(cfg, cfg.downlink)))
    return out


def transforms_for(exp: Any, ctx: Any = None) -> Sequence[Transform]:
    """The part's transform factory (:data:`fedge.compression.HOOKS`): the section's transforms, if it is set."""
    if "compression" not in exp.extensions:
        return []
    cfg: CompressionConfig = exp.section("compression")
    return build_transforms(cfg)
