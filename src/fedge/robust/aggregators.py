"""Byzantine-robust aggregation rules as pure NumPy functions on a stack of flat updates.

Every function takes ``x``, an ``(n, d)`` float64 matrix with one client update per row,
and returns one ``d`` vector (or the indices it selected). Hyperparameters are checked
and a wrong value raises :class:`~fedge.core.errors.ConfigError` naming it.

* coordinate-wise median and trimmed mean — Yin et al., "Byzantine-Robust Distributed
  Learning: Towards Optimal Statistical Rates", ICML 2018;
* Krum and Multi-Krum — Blanchard et al., "Machine Learning with Adversaries: Byzantine
  Tolerant Gradient Descent", NeurIPS 2017;
* Bulyan — El Mhamdi et al., "The Hidden Vulnerability of Distributed Learning in
  Byzantium", ICML 2018;
* norm bounding — Sun et al., "Can You Really Backdoor Federated Learning?", 2019;
* centered clipping — Karimireddy et al., "Learning from History for Byzantine Robust
  Optimization", ICML 2021.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedge.core.errors import AggregationError, ConfigError

F64 = npt.NDArray[np.float64]
Idx = npt.NDArray[np.intp]


def _rows(x: npt.ArrayLike) -> F64:
    m = np.asarray(x, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0:
        raise AggregationError(f"expected a non-empty (clients, values) matrix, got shape {m.shape}")
    return m


def coordinate_median(x: npt.ArrayLike) -> F64:
    """The median of every coordinate across clients."""
    return np.asarray(np.median(_rows(x), axis=0), dtype=np.float64)


def trim_count(n: int, fraction: float) -> int:
    """How many values trimmed mean drops at each end: ``floor(fraction * n)``."""
    if not 0 <= fraction < 0.5:
        raise ConfigError(f"trim_fraction must be in [0, 0.5), got {fraction}")
    return math.floor(fraction * n)


def trimmed_mean(x: npt.ArrayLike, fraction: float) -> F64:
    """Per coordinate: drop the ``floor(fraction*n)`` smallest and largest values, average the rest."""
    m = _rows(x)
    k = trim_count(m.shape[0], fraction)
    s = np.sort(m, axis=0)
    return np.asarray(s[k : m.shape[0] - k].mean(axis=0), dtype=np.float64)


def pairwise_sq_dists(x: npt.ArrayLike) -> F64:
    """Squared Euclidean distances between every pair of rows."""
    m = _rows(x)
    sq = np.einsum("ij,ij->i", m, m)
    d = sq[:, None] + sq[None, :] - 2.0 * (m @ m.T)
    np.maximum(d, 0.0, out=d)
    np.fill_diagonal(d, 0.0)
    return np.asarray(d, dtype=np.float64)


def krum_scores(x: npt.ArrayLike, f: int) -> F64:
    """Krum's score of each row: the sum of squared distances to its ``n - f - 2`` nearest rows."""
    m = _rows(x)
    n = m.shape[0]
    if f < 0:
        raise ConfigError(f"byzantine (f) must be >= 0, got {f}")
    if n < 2 * f + 3:
        raise ConfigError(f"krum needs n >= 2f + 3 updates: got n = {n} for byzantine f = {f}")
    d = pairwise_sq_dists(m)
    k = n - f - 2
    nearest = np.sort(d, axis=1)[:, 1 : k + 1]
    return np.asarray(nearest.sum(axis=1), dtype=np.float64)


def krum_select(x: npt.ArrayLike, f: int, m: int = 1) -> Idx:
    """Indices of the ``m`` rows with the lowest Krum scores (Multi-Krum; ``m = 1`` is Krum)."""
    rows = _rows(x)
    if not 1 <= m <= rows.shape[0]:
        raise ConfigError(f"multi-krum m must be in [1, {rows.shape[0]}], got {m}")
    scores = krum_scores(rows, f)
    return np.asarray(np.argsort(scores, kind="stable")[:m], dtype=np.intp)


def krum(x: npt.ArrayLike, f: int, m: int = 1) -> F64:
    """Krum (``m = 1``) or Multi-Krum: the mean of the ``m`` best-scored rows."""
    rows = _rows(x)
    return np.asarray(rows[krum_select(rows, f, m)].mean(axis=0), dtype=np.float64)


def bulyan(x: npt.ArrayLike, f: int) -> F64:
    """Bulyan: pick ``theta = n - 2f`` rows by iterated Krum, then per coordinate average the
    ``beta = theta - 2f`` values closest to the median."""
    rows = _rows(x)
    n = rows.shape[0]
    if f < 0:
        raise ConfigError(f"byzantine (f) must be >= 0, got {f}")
    if n < 4 * f + 3:
        raise ConfigError(f"bulyan needs n >= 4f + 3 updates: got n = {n} for byzantine f = {f}")
    theta = n - 2 * f
    remaining = list(range(n))
    chosen: list[int] = []
    for _ in range(theta):
        sub = rows[remaining]
        k = len(remaining) - f - 2
        if k >= 1:
            d = pairwise_sq_dists(sub)
            scores = np.sort(d, axis=1)[:, 1 : k + 1].sum(axis=1)
            best = int(np.argmin(scores))
        else:
            best = 0
        chosen.append(remaining.pop(best))
    sel = rows[chosen]
    beta = theta - 2 * f
    med = np.median(sel, axis=0)
    order = np.argsort(np.abs(sel - med), axis=0, kind="stable")[:beta]
    closest = np.take_along_axis(sel, order, axis=0)
    return np.asarray(closest.mean(axis=0), dtype=np.float64)


def clip_rows(x: npt.ArrayLike, bound: float) -> F64:
    """Scale every row whose L2 norm exceeds ``bound`` down to norm ``bound``."""
    m = _rows(x)
    if not bound > 0:
        raise ConfigError(f"norm bound must be > 0, got {bound}")
    norms = np.linalg.norm(m, axis=1)
    factor = np.minimum(1.0, bound / np.maximum(norms, 1e-300))
    return np.asarray(m * factor[:, None], dtype=np.float64)


def norm_bounded_mean(x: npt.ArrayLike, bound: float | None = None) -> F64:
    """Mean of the rows after clipping each to ``bound`` (``None``: the median row norm)."""
    m = _rows(x)
    if bound is None:
        bound = float(np.median(np.linalg.norm(m, axis=1)))
        if bound == 0:
            return np.zeros(m.shape[1], dtype=np.float64)
    return np.asarray(clip_rows(m, bound).mean(axis=0), dtype=np.float64)


def centered_clip(x: npt.ArrayLike, center: npt.ArrayLike, tau: float | None, iters: int = 1) -> F64:
    """Centered clipping: ``v <- v + mean_i clip_tau(x_i - v)``, ``iters`` times from ``center``.

    ``tau = None`` uses the median distance of the rows to the current centre.
    """
    m = _rows(x)
    if tau is not None and not tau > 0:
        raise ConfigError(f"centered clipping tau must be > 0, got {tau}")
    if iters < 1:
        raise ConfigError(f"centered clipping iterations must be >= 1, got {iters}")
    v = np.asarray(center, dtype=np.float64).copy()
    if v.shape != (m.shape[1],):
        raise AggregationError(f"center has shape {v.shape}, expected ({m.shape[1]},)")
    for _ in range(iters):
        diff = m - v
        radius = tau if tau is not None else float(np.median(np.linalg.norm(diff, axis=1)))
        if radius > 0:
            v = v + clip_rows(diff, radius).mean(axis=0)
    return v


__all__ = [
    "bulyan",
    "centered_clip",
    "clip_rows",
    "coordinate_median",
    "krum",
    "krum_scores",
    "krum_select",
    "norm_bounded_mean",
    "pairwise_sq_dists",
    "trim_count",
    "trimmed_mean",
]
