"""W7: buffered asynchronous aggregation (FedBuff) against synchronous FedAvg on a heterogeneous fleet.

The digits default (W6: 100 clients, Dirichlet(0.5) label skew, NumPy MLP, FedAvg, 5 local
epochs) on a fleet of 50 % ``pi-zero-2w``, 25 % ``pi5`` and 25 % ``orin-nano`` under fedge's
device simulation. Synchronous: 20 clients per round, waiting for all of them, or with a
deadline half the fleet can meet (1.1x the lower median of the predicted round times); the
better of the two is the baseline. Asynchronous: ``[async]`` with buffer K = 5, concurrency
C = 40, polynomial staleness weight ``(1+τ)^-0.5``. Every run has the same budget of client
updates (``--updates``) and stops at the target accuracy. The same three runs again with
``[secagg]`` on (synchronous: one SecAgg+ session per round; asynchronous: one per buffer,
the staleness weights applied by the clients). Prints one JSON line with the simulated
hours and client updates to target each way, the final accuracy, ``speedup_vs_sync``
(best synchronous hours / asynchronous hours) and ``speedup_vs_sync_secagg`` (the same,
both with secure aggregation).

    python benchmarks/async_tta.py [--quick] [--target 0.9] [--updates 4000] [--seeds 3] [--buffer 5]
        [--concurrency 40] [--no-secagg]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
from _common import emit

from fedge.config.schema import Experiment
from fedge.devices import policy_from_config, time_to_target
from fedge.engine import Callback, StopRun
from fedge.federation import build, execute
from fedge.simulation.history import History, RoundRecord
from fedge.strategies.base import StrategyState

FLEET = {"pi-zero-2w": 0.5, "pi5": 0.25, "orin-nano": 0.25}
COHORT, BUFFER, CONCURRENCY = 20, 5, 40


class StopAt(Callback):
    def __init__(self, target: float) -> None:
        self.target = target

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        if record.test_accuracy >= self.target:
            raise StopRun(f"reached {self.target}")


def experiment(
    seed: int, updates: int, devices: dict[str, Any], buffered: tuple[int, int] | None, secagg: bool = False
) -> Experiment:
    exp = Experiment()
    exp.seed = seed
    exp.model.framework = "numpy"
    exp.training.backend = "sequential"
    exp.training.clients_per_round = COHORT
    d = exp.section("devices")
    d.enabled = True
    d.fleet = dict(FLEET)
    for k, v in devices.items():
        setattr(d, k, v)
    if secagg:
        exp.section("secagg").enabled = True
    if buffered is not None:
        a = exp.section("async")
        a.enabled, (a.buffer_size, a.concurrency) = True, buffered
        a.staleness, a.staleness_exponent = "polynomial", 0.5
        exp.rounds = updates // a.buffer_size
    else:
        exp.rounds = updates // COHORT
    return exp


def half_fleet_deadline(seed: int) -> float:
    exp = experiment(seed, COHORT, {}, None)
    pol = policy_from_config(exp, build(exp))
    assert pol is not None
    return 1.1 * float(np.percentile(pol.predicted_time(np.arange(len(pol.sizes))), 50, method="lower"))


def updates_until(history: History, round_num: int | None) -> int | None:
    """Client updates the server used up to and including ``round_num`` (None: never reached)."""
    if round_num is None:
        return None
    return sum(r.participants for r in history if r.round <= round_num)


def one_seed(
    seed: int, target: float, updates: int, buffered: tuple[int, int], secagg: bool
) -> dict[str, dict[str, Any]]:
    base: dict[str, tuple[dict[str, Any], tuple[int, int] | None]] = {
        "wait_all": ({"policy": "wait_all"}, None),
        "deadline": ({"policy": "deadline", "deadline_s": half_fleet_deadline(seed)}, None),
        "async": ({}, buffered),
    }
    runs = {(name, False): run for name, run in base.items()}
    if secagg:
        runs |= {(name, True): run for name, run in base.items()}
    out: dict[str, dict[str, Any]] = {}
    for (plain_name, secure), (devices, buffered) in runs.items():
        name = f"{plain_name}_secagg" if secure else plain_name
        t0 = time.perf_counter()
        res = execute(build(experiment(seed, updates, devices, buffered, secure)), [StopAt(target)])
        reached = time_to_target(res.history, target)
        wasted = sum(int(r.extra.get("updates_wasted", 0)) for r in res.history)
        out[name] = {
            "hours_to_target": reached.hours,
            "updates_to_target": updates_until(res.history, reached.round),
            "steps_to_target": reached.round,
            "final_accuracy": reached.final_accuracy,
            "kj_to_target": reached.energy_kj,
            "wasted_updates": wasted,
        }
        print(
            f"seed {seed} {name:16s} steps={len(res.history)} hours={reached.hours:.4f} "
            f"acc={reached.final_accuracy:.4f} wall={time.perf_counter() - t0:.1f}s",
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke run: target 0.8, 1200 updates, 1 seed")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--updates", type=int, default=4000, help="client updates each way (the budget)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--buffer", type=int, default=BUFFER, help="async buffer size K")
    ap.add_argument("--concurrency", type=int, default=CONCURRENCY, help="async concurrency C")
    ap.add_argument("--no-secagg", action="store_true", help="skip the three runs with secure aggregation")
    args = ap.parse_args()
    target, updates, seeds = (0.8, 1200, 1) if args.quick else (args.target, args.updates, args.seeds)
    secagg = not args.no_secagg
    t_all = time.perf_counter()
    per_seed = [one_seed(seed, target, updates, (args.buffer, args.concurrency), secagg) for seed in range(seeds)]

    def best_sync(r: dict[str, dict[str, Any]], suffix: str = "") -> str:
        hours = {k: r[k + suffix]["hours_to_target"] for k in ("wait_all", "deadline")}
        return min(hours, key=lambda k: hours[k] if not math.isnan(hours[k]) else math.inf)

    def speedups(suffix: str) -> list[float]:
        return [
            r[best_sync(r, suffix) + suffix]["hours_to_target"] / r["async" + suffix]["hours_to_target"]
            for r in per_seed
        ]

    plain = speedups("")
    names = tuple(per_seed[0])
    secure: dict[str, Any] = {}
    if secagg:
        s = speedups("_secagg")
        secure = {
            "best_sync_secagg": [best_sync(r, "_secagg") for r in per_seed],
            "speedup_vs_sync_secagg": [round(x, 3) for x in s],
            "median_speedup_vs_sync_secagg": round(float(np.median(s)), 3),
        }
    emit(
        {
            "workload": "W7 async buffered aggregation, digits, 50% pi-zero-2w / 25% pi5 / 25% orin-nano",
            "backend": "numpy",
            "target": target,
            "updates_budget": updates,
            "seeds": seeds,
            "buffer_size": args.buffer,
            "concurrency": args.concurrency,
            "cohort": COHORT,
            "best_sync": [best_sync(r) for r in per_seed],
            "speedup_vs_sync": [round(x, 3) for x in plain],
            "median_speedup_vs_sync": round(float(np.median(plain)), 3),
            **secure,
            "hours_to_target": {k: [r[k]["hours_to_target"] for r in per_seed] for k in names},
            "updates_to_target": {k: [r[k]["updates_to_target"] for r in per_seed] for k in names},
            "final_accuracy": {k: [r[k]["final_accuracy"] for r in per_seed] for k in names},
            "kj_to_target": {k: [r[k]["kj_to_target"] for r in per_seed] for k in names},
            "wasted_updates": {k: [r[k]["wasted_updates"] for r in per_seed] for k in names},
            "wall_s": round(time.perf_counter() - t_all, 2),
        }
    )


if __name__ == "__main__":
    main()
