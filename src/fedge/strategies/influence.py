"""Bounds on one client's influence on a streamed round: its example-count weight and its update norm.

FedAvg weights each update by the example count its client reports and adds its delta as
sent, so one client that reports ``num_examples = 10**15`` with a large delta replaces the
global model. Two bounds stop that, both relative to the median of recent updates so they
follow the model's own scale and need no tuning:

* the weight is capped at ``examples_factor x`` the median reported count;
* the delta is scaled down to at most ``norm_factor x`` the median update L2 norm — the
  norm bounding of Sun et al., "Can You Really Backdoor Federated Learning?", 2019, with
  the median bound of :func:`fedge.robust.aggregators.norm_bounded_mean`.

A streamed round reduces each update on arrival, before the round's median is known, so
the medians are taken over a window holding each recent client's latest update: this
round's arrivals so far and, for the others, their update of an earlier round (as many
clients as a cohort). One entry per client means a client is compared with the others,
never with its own older updates, and a lone client moves a median of three or more
entries by at most one rank. Until the window holds ``min_reference`` clients (the first
round of a server process) the transport holds the first arrivals back and reduces them
once it does, or when the round's last update is in. The round mean of clipped deltas
then has norm at most ``norm_factor x median``. Once the window is full at the start of a
round, that round's bounds come from it alone (earlier rounds), so they do not depend on
the order of arrivals; only a first round whose bounds bind does. The window is
checkpointed with the round, so a resumed server bounds as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedge.core.params import l2_norm
from fedge.core.types import ClientUpdate


@dataclass(frozen=True)
class InfluenceLimits:
    """The factors of the two bounds; 0 turns one off."""

    examples_factor: float = 10.0
    norm_factor: float = 3.0
    min_reference: int = 3


def examples_cap(median_count: float, factor: float) -> int:
    """The largest example count an update is weighted by: ``ceil(factor x median)``, at least 1."""
    return max(1, math.ceil(factor * median_count))


def clip_scale(norm: float, bound: float) -> float:
    """The factor that brings an update of L2 norm ``norm`` within ``bound`` (1 when it already is)."""
    return 1.0 if norm <= bound or norm == 0 else bound / norm


class InfluenceBound:
    """The window of recent updates' norms and counts, and the bounds it gives each update."""

    def __init__(self, limits: InfluenceLimits) -> None:
        self.limits = limits
        self.size = limits.min_reference
        self.latest: OrderedDict[int, tuple[float, float]] = OrderedDict()
        """Client id -> (update norm, reported count) of its latest update, oldest first."""
        self.fixed: tuple[float, float] | None = None
        """The window's (median count, median norm) as the round began, when it was full enough:
        the bounds of that round come from earlier rounds only, so they do not depend on the
        order in which updates arrive (and the medians are computed once a round)."""

    def start_round(self, cohort: int) -> None:
        """Make the window one cohort of clients long (at least ``min_reference``) and fix the round's medians."""
        self.size = max(self.limits.min_reference, cohort)
        self._trim()
        self.fixed = self._medians() if len(self.latest) >= self.limits.min_reference else None

    @property
    def ready(self) -> bool:
        """Whether the medians can be set by a majority: fixed from earlier rounds, or enough arrivals."""
        return self.fixed is not None or len(self.latest) >= self.limits.min_reference

    @property
    def norms(self) -> list[float]:
        """The window's update norms, oldest first."""
        return [n for n, _ in self.latest.values()]

    def _medians(self) -> tuple[float, float]:
        entries = np.array(list(self.latest.values()), dtype=np.float64)
        return float(np.median(entries[:, 1])), float(np.median(entries[:, 0]))

    def observe(self, update: ClientUpdate) -> None:
        """Make a decoded, validated update its client's entry in the window."""
        self.latest.pop(update.client_id, None)
        self.latest[update.client_id] = (l2_norm(update.delta), float(update.num_examples))
        self._trim()

    def state_dict(self) -> list[list[float]]:
        """The window as ``[client id, norm, count]`` rows, oldest first: checkpointed with the round,
        so that a resumed server bounds the next round exactly as an uninterrupted one would."""
        return [[float(cid), norm, count] for cid, (norm, count) in self.latest.items()]

    def load_state_dict(self, rows: list[list[float]]) -> None:
        self.latest = OrderedDict((int(cid), (float(norm), float(count))) for cid, norm, count in rows)

    def _trim(self) -> None:
        while len(self.latest) > self.size:
            self.latest.popitem(last=False)

    def apply(self, update: ClientUpdate, info: dict[str, Any]) -> ClientUpdate:
        """The update with its count capped and its delta clipped; ``info`` counts what was bounded."""
        lim = self.limits
        if not self.latest and self.fixed is None:
            return update
        median_count, median_norm = self.fixed if self.fixed is not None else self._medians()
        n = update.num_examples
        if lim.examples_factor > 0:
            cap = examples_cap(median_count, lim.examples_factor)
            info["influence_examples_cap"] = cap
            if n > cap:
                n = cap
                info["influence_capped_updates"] = info.get("influence_capped_updates", 0) + 1
        delta = update.delta
        if lim.norm_factor > 0:
            bound = lim.norm_factor * median_norm
            info["influence_norm_bound"] = bound
            scale = clip_scale(l2_norm(delta), bound)
            if scale < 1.0:
                delta = [(d * np.float32(scale)).astype(np.float32) for d in delta]
                info["influence_clipped_updates"] = info.get("influence_clipped_updates", 0) + 1
        if n == update.num_examples and delta is update.delta:
            return update
        return replace(update, delta=delta, num_examples=n)
