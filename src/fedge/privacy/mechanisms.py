"""The pure maths of fedge's privacy transforms: clipping, noise scales, adaptive clipping.

* Clipping and the Gaussian noise of DP-FedAvg: McMahan et al., "Learning Differentially
  Private Recurrent Language Models", ICLR 2018 — ``sigma = z * C / m`` on the mean of
  ``m`` expected clients (fixed-denominator estimator).
* Adaptive clipping: Andrew et al., "Differentially Private Learning with Adaptive
  Clipping", NeurIPS 2021 — the bound follows a target quantile ``gamma`` of the update
  norms by a geometric step on a privately estimated fraction of unclipped updates.
* Local DP: the analytic Gaussian mechanism (Balle & Wang, ICML 2018) via dp-accounting,
  and the Laplace mechanism (Dwork et al. 2006) on L1-clipped updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import dp_accounting
import numpy as np
import numpy.typing as npt

from fedge.core.errors import ConfigError
from fedge.core.params import Params, l2_norm


def clip_l2(params: Sequence[npt.NDArray[np.generic]], bound: float) -> tuple[Params, float]:
    """Scale ``params`` so their global L2 norm is at most ``bound``; return them and the old norm."""
    if not bound > 0:
        raise ConfigError(f"clipping bound must be > 0, got {bound}")
    norm = l2_norm(params)
    factor = min(1.0, bound / norm) if norm > 0 else 1.0
    out = [np.asarray(p, dtype=np.float64) * factor for p in params]
    # Rounding to float32 may push the norm a hair above the bound; pull it back under.
    clipped = [p.astype(np.float32) for p in out]
    while l2_norm(clipped) > bound:
        factor *= 1 - 1e-6
        clipped = [(np.asarray(p, dtype=np.float64) * factor).astype(np.float32) for p in params]
    return clipped, norm


def clip_l1(params: Sequence[npt.NDArray[np.generic]], bound: float) -> tuple[Params, float]:
    """Scale ``params`` so their global L1 norm is at most ``bound``; return them and the old norm."""
    if not bound > 0:
        raise ConfigError(f"clipping bound must be > 0, got {bound}")
    norm = float(sum(np.abs(np.asarray(p, dtype=np.float64)).sum() for p in params))
    factor = min(1.0, bound / norm) if norm > 0 else 1.0
    return [(np.asarray(p, dtype=np.float64) * factor * (1 - 1e-7)).astype(np.float32) for p in params], norm


def split_noise(noise_multiplier: float, count_stddev: float) -> float:
    """The noise multiplier left for the updates when the clipped-count query gets ``count_stddev``.

    Andrew et al. (Theorem 1): ``z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` keeps the
    pair of queries exactly as private as one Gaussian query with multiplier ``z``.
    """
    if not noise_multiplier > 0:
        raise ConfigError(f"noise multiplier must be > 0 with DP on, got {noise_multiplier}")
    if not count_stddev > 0:
        return noise_multiplier
    inv = noise_multiplier**-2 - (2 * count_stddev) ** -2
    if inv <= 0:
        raise ConfigError(
            f"adaptive clipping count noise {count_stddev} is too small for noise multiplier "
            f"{noise_multiplier}: need count_noise > {noise_multiplier / 2:.4g}"
        )
    return float(inv**-0.5)


def adaptive_clip_update(bound: float, unclipped_fraction: float, *, target_quantile: float, lr: float) -> float:
    """Andrew et al.'s geometric update ``C <- C * exp(-lr * (b - gamma))``."""
    return float(bound * math.exp(-lr * (unclipped_fraction - target_quantile)))


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Standard deviation of the Gaussian mechanism that is (ε, δ)-DP for this L2 sensitivity.

    The analytic Gaussian mechanism (Balle & Wang, ICML 2018) as computed by
    dp-accounting: exact and valid for every ε, unlike the classic ``sqrt(2 ln(1.25/δ))/ε``.
    """
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ConfigError(f"local_epsilon must be a positive finite number, got {epsilon}")
    if not 0 < delta < 1:
        raise ConfigError(f"local_delta must be in (0, 1), got {delta}")
    return float(dp_accounting.get_sigma_gaussian(epsilon, delta)) * sensitivity


def laplace_scale(epsilon: float, sensitivity: float) -> float:
    """Scale ``b = sensitivity / ε`` of the ε-DP Laplace mechanism (L1 sensitivity)."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ConfigError(f"local_epsilon must be a positive finite number, got {epsilon}")
    return sensitivity / epsilon


__all__ = ["adaptive_clip_update", "clip_l1", "clip_l2", "gaussian_sigma", "laplace_scale", "split_noise"]
