"""Client selection: uniform, weighted by data size, fastest-first, and Oort.

Oort follows Lai et al., "Oort: Efficient Federated Learning via Guided Participant
Selection", OSDI 2021 (§4). A client's utility is its statistical utility
``|B_i| * sqrt(mean(loss²))`` — approximated from the mean training loss it reports —
normalised by the (95th-percentile clipped) largest one, plus a staleness bonus
``sqrt(0.1 * ln R / L_i)`` (R the round, L_i the last round the client took part),
multiplied by the system penalty ``(T / t_i)^α`` when its round time ``t_i`` exceeds the
preferred round duration ``T``. A share ε of each cohort explores clients never tried
(faster ones more likely), ε decaying each round; the rest exploits: clients above 95 %
of the K-th best utility are sampled with probability proportional to utility. ``T`` is
the ``pacer`` percentile of the explored clients' durations, raised by a step whenever the
summed utility of a window of rounds falls (the pacer of §4.3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

SELECTIONS = ("uniform", "weighted", "fastest", "oort")


def select_uniform(available: Sequence[int], k: int, rng: np.random.Generator) -> list[int]:
    ids = np.asarray(sorted(available), dtype=np.int64)
    return sorted(int(i) for i in rng.choice(ids, size=min(k, len(ids)), replace=False))


def select_weighted(
    available: Sequence[int], k: int, sizes: npt.NDArray[np.int64], rng: np.random.Generator
) -> list[int]:
    """Without replacement, with probability proportional to the client's training examples."""
    ids = np.asarray(sorted(available), dtype=np.int64)
    w = sizes[ids].astype(np.float64) + 1e-12
    return sorted(int(i) for i in rng.choice(ids, size=min(k, len(ids)), replace=False, p=w / w.sum()))


def select_fastest(available: Sequence[int], k: int, times: Mapping[int, float]) -> list[int]:
    """The ``k`` clients with the shortest predicted round time (ties by id)."""
    return sorted(sorted(available, key=lambda c: (times[c], c))[:k])


@dataclass
class Oort:
    """Oort's participant selector; ``observe`` feeds it each round's results."""

    exploration: float = 0.9
    exploration_decay: float = 0.98
    min_exploration: float = 0.3
    alpha: float = 2.0
    pacer: float = 0.3
    pacer_step: float = 0.05
    pacer_window: int = 20
    preferred_s: float = 0.0
    stat: dict[int, float] = field(default_factory=dict)
    duration: dict[int, float] = field(default_factory=dict)
    last_round: dict[int, int] = field(default_factory=dict)
    utility_log: list[float] = field(default_factory=list)

    def preferred_duration(self) -> float:
        """``T``: fixed when ``preferred_s`` > 0, else the pacer percentile of known durations."""
        if self.preferred_s > 0 or not self.duration:
            return self.preferred_s or math.inf
        return float(np.quantile(sorted(self.duration.values()), min(self.pacer, 1.0)))

    def utility(self, cid: int, round_num: int, clip: float, pref: float) -> float:
        stat = min(self.stat[cid], clip) / clip if clip > 0 else 0.0
        stat += math.sqrt(0.1 * math.log(max(round_num, 2)) / max(self.last_round[cid], 1))
        t = self.duration[cid]
        if t > pref:
            stat *= (pref / t) ** self.alpha
        return stat

    def select(
        self, round_num: int, available: Sequence[int], k: int, predicted: Mapping[int, float], rng: np.random.Generator
    ) -> list[int]:
        k = min(k, len(available))
        eps = max(self.min_exploration, self.exploration * self.exploration_decay ** (round_num - 1))
        explored = [c for c in available if c in self.stat]
        fresh = [c for c in available if c not in self.stat]
        n_explore = min(len(fresh), max(k - len(explored), round(eps * k)))
        n_exploit = min(k - n_explore, len(explored))
        chosen: list[int] = []
        if n_exploit:
            clip = float(np.quantile(list(self.stat.values()), 0.95))
            pref = self.preferred_duration()
            util = np.array([self.utility(c, round_num, clip, pref) for c in explored])
            cut = 0.95 * np.sort(util)[::-1][n_exploit - 1]
            pool = np.flatnonzero(util >= cut)
            p = util[pool] + 1e-12
            pick = rng.choice(pool, size=n_exploit, replace=False, p=p / p.sum())
            chosen += [explored[int(i)] for i in pick]
        n_explore = min(len(fresh), k - len(chosen))
        if n_explore:
            speed = np.array([1.0 / max(predicted[c], 1e-9) for c in fresh])
            pick = rng.choice(len(fresh), size=n_explore, replace=False, p=speed / speed.sum())
            chosen += [fresh[int(i)] for i in pick]
        return sorted(chosen)

    def observe(self, round_num: int, results: Mapping[int, tuple[float, float, float]]) -> None:
        """Results of a round: client -> (num_examples, mean train loss, round time s)."""
        for cid, (n, loss, t) in results.items():
            if math.isfinite(loss):
                self.stat[cid] = n * math.sqrt(loss * loss)
                self.duration[cid] = t
                self.last_round[cid] = round_num
        self.utility_log.append(sum(self.stat.get(c, 0.0) for c in results))
        w = self.pacer_window
        log = self.utility_log
        if self.preferred_s <= 0 and len(log) >= 2 * w and len(log) % w == 0 and sum(log[-w:]) < sum(log[-2 * w : -w]):
            self.pacer = min(1.0, self.pacer + self.pacer_step)
