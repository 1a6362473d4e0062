"""Time-to-accuracy and energy-to-accuracy from a run's history (simulated clock)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fedge.core.errors import DataError
from fedge.simulation.history import History


@dataclass(frozen=True)
class Reached:
    """When a run first reached the target: round, simulated hours, energy in kJ
    (NaN when it never did; then ``final_accuracy`` and the totals tell how far it got)."""

    round: int | None
    hours: float
    energy_kj: float
    final_accuracy: float
    total_hours: float
    total_energy_kj: float


def time_to_target(history: History | Iterable[object], target: float, key: str = "test_accuracy") -> Reached:
    """The first round whose ``key`` is at least ``target``, with the simulated clock and
    the energy spent up to and including it."""
    rounds = list(history.rounds if isinstance(history, History) else history)
    clock = energy = 0.0
    final = math.nan
    hit: tuple[int, float, float] | None = None
    for rec in rounds:
        extra = getattr(rec, "extra", {})
        if "sim_clock_s" not in extra:
            raise DataError(
                f"round {getattr(rec, 'round', '?')} has no simulated time: "
                "the run did not use the device simulation ([devices] enabled = true)"
            )
        clock = float(extra["sim_clock_s"])
        energy += float(extra.get("energy_j", 0.0))
        acc = getattr(rec, key, math.nan)
        if acc is None or (isinstance(acc, float) and math.isnan(acc)):
            continue
        final = float(acc)
        if hit is None and final >= target:
            hit = (int(getattr(rec, "round", 0)), clock, energy)
    if hit is None:
        return Reached(None, math.nan, math.nan, final, clock / 3600, energy / 1000)
    return Reached(hit[0], hit[1] / 3600, hit[2] / 1000, final, clock / 3600, energy / 1000)


def tta_table(results: Mapping[str, Reached], target: float, baseline: str | None = None) -> str:
    """A plain-text table, one row per policy; ``speedup`` is against ``baseline``'s hours."""
    base = results[baseline].hours if baseline and baseline in results else math.nan
    head = (
        f"{'policy':<14} {'round':>6} {'hours to ' + format(target, '.0%'):>13} "
        f"{'kJ to target':>12} {'speedup':>8} {'final acc':>9}"
    )
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        speed = base / r.hours if r.hours and not math.isnan(r.hours) else math.nan
        rnd = "-" if r.round is None else str(r.round)
        lines.append(
            f"{name:<14} {rnd:>6} {r.hours:>13.4g} {r.energy_kj:>12.4g} {speed:>7.2f}x {r.final_accuracy:>9.3f}"
        )
    return "\n".join(lines)
