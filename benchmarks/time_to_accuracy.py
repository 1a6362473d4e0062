"""Time-to-accuracy of round policies on a fleet with 50 % Raspberry Pi Zero 2 W devices.

The digits default (W6: scikit-learn digits, 100 clients, Dirichlet(0.5) label skew, MLP,
FedAvg, 20 clients per round, 5 local epochs) on a fleet of 50 % ``pi-zero-2w`` and 50 %
faster devices, under fedge's device simulation. Policies: wait for all; a deadline (the
median predicted full-work round time of the fleet, so about half the fleet can meet it);
over-commitment (select ⌈1.3 K⌉, keep the first K); Oort selection (Lai et al., OSDI 2021)
— alone (wait for its cohort) and with 1.3x over-commitment, as evaluated in the paper.
Each run stops when the centralised test accuracy reaches the target. Prints the table
and one JSON line last with simulated hours and energy to target per policy, the speed-up
against wait-for-all, and the wall-time ratio of the device simulation (the same run with
and without it, same training).

    python benchmarks/time_to_accuracy.py [--quick] [--target 0.9] [--max-rounds N]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any

import numpy as np

from fedge.config.schema import Experiment
from fedge.devices import policy_from_config, time_to_target, tta_table
from fedge.experiment import build, execute
from fedge.plugins import load_plugins
from fedge.simulation.history import RoundRecord
from fedge.simulation.loop import Callback, StopRun
from fedge.strategies.base import StrategyState

FLEET = {"pi-zero-2w": 0.5, "pi5": 0.2, "phone-flagship": 0.15, "orin-nano": 0.15}
POLICIES: dict[str, dict[str, Any]] = {
    "wait_all": {"policy": "wait_all"},
    "deadline": {"policy": "deadline"},
    "overcommit": {"policy": "overcommit", "overcommit": 1.3},
    "oort": {"policy": "wait_all", "selection": "oort"},
    "oort+overcommit": {"policy": "overcommit", "overcommit": 1.3, "selection": "oort"},
}


class StopAt(Callback):
    def __init__(self, target: float) -> None:
        self.target = target

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        if record.test_accuracy >= self.target:
            raise StopRun(f"reached {self.target}")


def experiment(rounds: int, backend: str, seed: int, devices: dict[str, Any] | None) -> Experiment:
    exp = Experiment()
    exp.seed = seed
    exp.rounds = rounds
    exp.model.framework = "numpy" if backend == "numpy" else "torch"
    exp.training.backend = "sequential" if backend == "numpy" else backend
    if devices is not None:
        d = exp.section("devices")
        d.enabled = True
        d.fleet = dict(FLEET)
        for k, v in devices.items():
            setattr(d, k, v)
    return exp


def median_deadline(backend: str, seed: int) -> float:
    exp = experiment(1, backend, seed, {})
    pol = policy_from_config(exp, build(exp))
    assert pol is not None
    return float(np.median(pol.predicted_time(np.arange(len(pol.sizes)))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke run: target 0.8, at most 40 rounds")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--max-rounds", type=int, default=300)
    ap.add_argument("--backend", default="numpy", help="numpy (NumPy MLP, sequential) or a torch backend")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    load_plugins()
    target, max_rounds = (0.8, 40) if args.quick else (args.target, args.max_rounds)
    t_all = time.perf_counter()
    deadline = median_deadline(args.backend, args.seed)
    results = {}
    for name, opts in POLICIES.items():
        opts = {**opts, "deadline_s": deadline} if opts["policy"] == "deadline" else opts
        t0 = time.perf_counter()
        res = execute(build(experiment(max_rounds, args.backend, args.seed, opts)), [StopAt(target)])
        results[name] = time_to_target(res.history, target)
        print(f"{name:16s} rounds={len(res.history)} wall={time.perf_counter() - t0:.1f}s", flush=True)
    print(tta_table(results, target, baseline="wait_all"))
    walls = {"without": 0.0, "with": 0.0}
    n = 5 if args.quick else 20
    for _ in range(2):
        for label, dev in (("without", None), ("with", {})):
            t0 = time.perf_counter()
            execute(build(experiment(n, args.backend, args.seed, dev)))
            walls[label] += time.perf_counter() - t0
    base = results["wait_all"].hours
    print(json.dumps({
        "workload": "time-to-accuracy digits, 50% pi-zero-2w", "backend": args.backend,
        "target": target, "fleet": FLEET, "deadline_s": round(deadline, 4),
        "wall_s": round(time.perf_counter() - t_all, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "hours_to_target": {k: r.hours for k, r in results.items()},
        "rounds_to_target": {k: r.round for k, r in results.items()},
        "kj_to_target": {k: r.energy_kj for k, r in results.items()},
        "speedup_vs_wait_all": {k: round(base / r.hours, 3) if r.hours == r.hours else None
                                for k, r in results.items()},
        "device_sim_wall_ratio": round(walls["with"] / walls["without"], 4),
    }))


if __name__ == "__main__":
    main()
