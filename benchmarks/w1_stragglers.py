"""W1 with stragglers (BENCHMARKS.md): FedProx (μ=1) keeping partial work vs FedAvg dropping.

FedProx's Synthetic(1, 1), 30 devices, multinomial logistic regression, 10 devices per
round, 20 local epochs, batch 10, SGD lr 0.01. At 0 %, 50 % and 90 % stragglers (a share
of each cohort that can only do a random 1..E epochs) FedAvg drops the stragglers while
FedProx keeps their partial work — the systems-heterogeneity experiment of Li et al.,
"Federated Optimization in Heterogeneous Networks", MLSys 2020 (Fig. 1). Stragglers run
through fedge's device simulation (``[devices] straggler_fraction``, policy ``partial`` for
FedProx, ``wait_all`` for FedAvg, which then drops them).

Prints one JSON line last: final accuracy and training loss per method and straggler
share, and the gap at 90 % in accuracy points (the device simulation's wall-time overhead
is measured by ``time_to_accuracy.py``).

    python benchmarks/w1_stragglers.py [--quick] [--rounds N] [--backend B]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from fedge.config.schema import Experiment
from fedge.experiment import build, execute
from fedge.plugins import load_plugins


def experiment(strategy: str, stragglers: float | None, rounds: int, backend: str, seed: int) -> Experiment:
    exp = Experiment()
    exp.seed = seed
    exp.rounds = rounds
    exp.data.dataset = "synthetic"
    exp.data.num_clients = 30
    exp.data.synthetic_alpha = exp.data.synthetic_beta = 1.0
    exp.data.test_fraction = 0.1
    exp.model.name = "logreg"
    exp.model.framework = "numpy" if backend == "numpy" else "torch"
    exp.training.backend = "sequential" if backend == "numpy" else backend
    exp.training.clients_per_round = 10
    exp.training.local_epochs = 20
    exp.training.batch_size = 10
    exp.training.lr = 0.01
    exp.strategy.name = strategy
    exp.strategy.mu = 1.0
    exp.evaluation.every = 10
    if stragglers is not None:
        d = exp.section("devices")
        d.enabled = True
        d.fleet = {"pi4": 1.0}
        d.straggler_fraction = stragglers
        d.policy = "partial" if strategy == "fedprox" else "wait_all"
    return exp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 rounds")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--backend", default="numpy", help="numpy (NumPy learner, sequential) or a torch backend")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    load_plugins()
    rounds = 20 if args.quick else args.rounds
    t_all = time.perf_counter()
    acc: dict[str, float] = {}
    loss: dict[str, float] = {}
    sim_hours: dict[str, float] = {}
    for frac in (0.0, 0.5, 0.9):
        for strategy in ("fedavg", "fedprox"):
            t0 = time.perf_counter()
            res = execute(build(experiment(strategy, frac, rounds, args.backend, args.seed)))
            key = f"{strategy}_{int(frac * 100)}"
            acc[key] = res.history.final_accuracy
            loss[key] = res.history.last("train_loss")
            sim_hours[key] = res.history.last("sim_clock_s") / 3600
            curve = [round(r.test_accuracy, 4) for r in res.history if r.test_accuracy == r.test_accuracy]
            print(f"{key:12s} acc={acc[key]:.4f} loss={loss[key]:.4f} wall={time.perf_counter() - t0:.1f}s "
                  f"curve={curve}", flush=True)
    print(json.dumps({
        "workload": "W1-stragglers", "backend": args.backend, "rounds": rounds,
        "wall_s": round(time.perf_counter() - t_all, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "final_accuracy": {k: round(v, 4) for k, v in acc.items()},
        "final_train_loss": {k: round(v, 4) for k, v in loss.items()},
        "sim_hours": {k: round(v, 4) for k, v in sim_hours.items()},
        "gap_90_points": round(100 * (acc["fedprox_90"] - acc["fedavg_90"]), 2),
    }))


if __name__ == "__main__":
    main()
