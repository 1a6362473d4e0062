"""Time-to-accuracy of round policies on a fleet with 50 % Raspberry Pi Zero 2 W devices.

The digits default (W6: scikit-learn digits, 100 clients, Dirichlet(0.5) label skew, MLP,
FedAvg, 20 clients per round, 5 local epochs) on a fleet of 50 % ``pi-zero-2w`` and 50 %
faster devices, under fedge's device simulation. Policies: wait for all; a deadline that half
the fleet can meet (1.1x the lower median of the predicted full-work round times);
over-commitment (select ⌈1.3 K⌉, keep the first K; and 2 K for comparison); Oort selection (Lai et al., OSDI 2021)
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
from fedge.devices.report import Reached
from fedge.engine import Callback, StopRun
from fedge.federation import build, execute
from fedge.simulation.history import RoundRecord
from fedge.strategies.base import StrategyState

FLEET = {"pi-zero-2w": 0.5, "pi5": 0.25, "orin-nano": 0.25}
POLICIES: dict[str, dict[str, Any]] = {
    "wait_all": {"policy": "wait_all"},
    "deadline": {"policy": "deadline"},
    "overcommit": {"policy": "overcommit", "overcommit": 1.3},
    "overcommit-x2": {"policy": "overcommit", "overcommit": 2.0},
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


def half_fleet_deadline(backend: str, seed: int) -> float:
    """A deadline half the fleet can meet: 1.1x the lower median of predicted round times."""
    exp = experiment(1, backend, seed, {})
    pol = policy_from_config(exp, build(exp))
    assert pol is not None
    return 1.1 * float(np.percentile(pol.predicted_time(np.arange(len(pol.sizes))), 50, method="lower"))


def device_overhead(backend: str, rounds: int, reps: int) -> tuple[float, float, float]:
    """The same run (wait for all, uniform: identical training) with and without the device
    simulation: (wall-time ratio, CPU-time ratio, share of the wall spent inside the
    policy's hooks). On a shared machine the hook share is the steadiest of the three."""
    import fedge.devices.policy as dp

    spent = [0.0]
    originals = {n: getattr(dp.DevicePolicy, n) for n in ("available", "select", "plan", "finish")}

    def timed(fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[0] += time.perf_counter() - t0

        return wrapper

    walls = {"without": 0.0, "with": 0.0}
    cpus = {"without": 0.0, "with": 0.0}
    for n, fn in originals.items():
        setattr(dp.DevicePolicy, n, timed(fn))
    try:
        execute(build(experiment(2, backend, 0, {})))  # warm-up: imports, first-call compilation
        spent[0] = 0.0
        for _ in range(reps):
            for label, dev in (("without", None), ("with", {})):
                built = build(experiment(rounds, backend, 0, dev))
                t0, c0 = time.perf_counter(), time.process_time()
                execute(built)
                walls[label] += time.perf_counter() - t0
                cpus[label] += time.process_time() - c0
    finally:
        for n, fn in originals.items():
            setattr(dp.DevicePolicy, n, fn)
    return (
        round(walls["with"] / walls["without"], 4),
        round(cpus["with"] / cpus["without"], 4),
        round(spent[0] / walls["with"], 4),
    )


def one_seed(args: argparse.Namespace, seed: int, target: float, max_rounds: int) -> dict[str, Reached]:
    deadline = half_fleet_deadline(args.backend, seed)
    results = {}
    for name, opts in POLICIES.items():
        opts = {**opts, "deadline_s": deadline} if opts["policy"] == "deadline" else opts
        t0 = time.perf_counter()
        res = execute(build(experiment(max_rounds, args.backend, seed, opts)), [StopAt(target)])
        results[name] = time_to_target(res.history, target)
        print(f"seed {seed} {name:16s} rounds={len(res.history)} wall={time.perf_counter() - t0:.1f}s", flush=True)
    print(f"seed {seed}, deadline {deadline:.4f} s")
    print(tta_table(results, target, baseline="wait_all"), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke run: target 0.8, at most 40 rounds, 1 seed")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--max-rounds", type=int, default=300)
    ap.add_argument("--backend", default="numpy", help="numpy (NumPy MLP, sequential) or a torch backend")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    target, max_rounds, seeds = (0.8, 40, 1) if args.quick else (args.target, args.max_rounds, args.seeds)
    t_all = time.perf_counter()
    per_seed = [one_seed(args, seed, target, max_rounds) for seed in range(seeds)]
    n = 5 if args.quick else 30
    overhead = {
        be: device_overhead(be, n if be == "numpy" else max(n // 3, 3), reps=2 if args.quick else 3)
        for be in ("numpy", "vectorized")
    }

    def speedups(name: str) -> list[float]:
        return [r["wait_all"].hours / r[name].hours for r in per_seed]

    print(
        json.dumps(
            {
                "workload": "time-to-accuracy digits, 50% pi-zero-2w",
                "backend": args.backend,
                "target": target,
                "fleet": FLEET,
                "seeds": seeds,
                "wall_s": round(time.perf_counter() - t_all, 2),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "hours_to_target": {k: [r[k].hours for r in per_seed] for k in POLICIES},
                "rounds_to_target": {k: [r[k].round for r in per_seed] for k in POLICIES},
                "kj_to_target": {k: [round(r[k].energy_kj, 4) for r in per_seed] for k in POLICIES},
                "speedup_vs_wait_all": {k: [round(x, 3) for x in speedups(k)] for k in POLICIES},
                "median_speedup_vs_wait_all": {k: round(float(np.median(speedups(k))), 3) for k in POLICIES},
                "device_sim_wall_ratio": {be: o[0] for be, o in overhead.items()},
                "device_sim_cpu_ratio": {be: o[1] for be, o in overhead.items()},
                "device_sim_hook_share": {be: o[2] for be, o in overhead.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
