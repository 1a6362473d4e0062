"""The SecAgg+ neighbour graph and the choice of its degree ``k`` and threshold ``t``.

Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020:
instead of every pair of clients, each client masks and shares secrets with ``k`` neighbours
on a random ``k``-regular graph, a Harary graph on a random permutation of the cohort
(clients on a ring, each joined to the ``k/2`` nearest on either side). ``k = n - 1`` is
the complete graph, Bonawitz et al.'s classic SecAgg (CCS 2017).

:func:`choose_parameters` picks the smallest even ``k >= 2 ceil(log2 n)`` whose threshold
``t = floor(k/2) + 1`` (a strict majority of the neighbours) is still reached, with
probability at least ``1 - 2^-sigma`` for every client of the round at once, when each
client drops out independently with probability ``dropout``; when no ``k < n - 1`` does,
it falls back to classic SecAgg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedge.core.errors import ConfigError


@dataclass(frozen=True)
class GraphParams:
    """Degree ``k`` and Shamir threshold ``t`` for a cohort of ``n``."""

    n: int
    k: int
    t: int

    @property
    def classic(self) -> bool:
        return self.k == self.n - 1


def _too_few_survive(k: int, t: int, dropout: float) -> float:
    """P[fewer than t of k neighbours survive] when each drops independently with ``dropout``."""
    return sum(math.comb(k, j) * dropout**j * (1 - dropout) ** (k - j) for j in range(k - t + 1, k + 1))


def validate(n: int, k: int, t: int) -> GraphParams:
    if n < 2:
        raise ConfigError(f"secagg: secure aggregation needs at least 2 clients, got {n}")
    if not 1 <= k <= n - 1:
        raise ConfigError(f"secagg.neighbours: k = {k} must be between 1 and n - 1 = {n - 1}")
    if k < n - 1 and k % 2:
        raise ConfigError(f"secagg.neighbours: k = {k} must be even (or n - 1 = {n - 1} for classic SecAgg)")
    if not k // 2 + 1 <= t <= k:
        raise ConfigError(
            f"secagg.threshold: t = {t} must be a majority of the {k} neighbours, "
            f"between {k // 2 + 1} and {k} (more than the {n - 1} other clients is impossible)"
        )
    return GraphParams(n, k, t)


def choose_parameters(n: int, dropout: float = 0.1, sigma: int = 20, *, k: int = 0, t: int = 0) -> GraphParams:
    """Safe defaults for ``n`` clients; explicit ``k`` / ``t`` (non-zero) are validated instead."""
    if not 0 <= dropout < 0.5:
        raise ConfigError(f"secagg.expected_dropout: must be in [0, 0.5), got {dropout}")
    if n < 2:
        raise ConfigError(f"secagg: secure aggregation needs at least 2 clients, got {n}")
    if k:
        return validate(n, k, t or k // 2 + 1)
    target = 2.0**-sigma / n
    k = 2 * math.ceil(math.log2(n))
    while k < n - 1:
        if _too_few_survive(k, k // 2 + 1, dropout) <= target:
            return validate(n, k, t or k // 2 + 1)
        k += 2
    return validate(n, n - 1, t or (n - 1) // 2 + 1)


def failure_probability(p: GraphParams, dropout: float) -> float:
    """Union bound on P[some client keeps fewer than ``t`` live neighbours]."""
    return min(1.0, p.n * _too_few_survive(p.k, p.t, dropout))


def neighbours(n: int, k: int, seed: int) -> list[list[int]]:
    """Adjacency lists (positions ``0..n-1``) of the Harary graph on a seeded random ring."""
    if k >= n - 1:
        return [[v for v in range(n) if v != u] for u in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    where = np.empty(n, dtype=np.int64)
    where[order] = np.arange(n)
    out: list[list[int]] = []
    for u in range(n):
        pos = int(where[u])
        out.append(sorted(int(order[(pos + d) % n]) for d in range(-(k // 2), k // 2 + 1) if d))
    return out
