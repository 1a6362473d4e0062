"""W1 with stragglers (BENCHMARKS.md): FedProx (μ=1) keeping partial work vs FedAvg dropping.

FedProx's Synthetic(1, 1), 30 devices, multinomial logistic regression, 10 devices per
round, 20 local epochs, batch 10, SGD lr 0.01. At 0 %, 50 % and 90 % stragglers (a share
of each cohort that can only do a random 1..E epochs) FedAvg drops the stragglers while
FedProx keeps their partial work — the systems-heterogeneity experiment of Li et al.,
"Federated Optimization in Heterogeneous Networks", MLSys 2020 (Fig. 1). Stragglers run
through fedge's device simulation (``[devices] straggler_fraction``, policy ``partial`` for
FedProx, ``wait_all`` for FedAvg, which then drops them).

Prints one JSON line last, per method and straggler share and per seed (each seed is
its own draw of the Synthetic(1,1) data): final accuracy, the mean of the last five
evaluations (every 10 rounds), the participants' mean local training loss, and the
FedProx - FedAvg gap at 90 % in accuracy points (the device simulation's wall-time overhead
is measured by ``time_to_accuracy.py``).

    python benchmarks/w1_stragglers.py [--quick] [--rounds N] [--seeds S] [--backend B]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from fedge.config.schema import Experiment
from fedge.federation import build, execute


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
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 rounds, one seed")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--backend", default="numpy", help="numpy (NumPy learner, sequential) or a torch backend")
    ap.add_argument("--seed", type=int, default=0, help="first seed (data and training)")
    ap.add_argument("--seeds", type=int, default=1, help="number of seeds, each its own Synthetic(1,1) draw")
    args = ap.parse_args()
    rounds = 20 if args.quick else args.rounds
    seeds = list(range(args.seed, args.seed + (1 if args.quick else args.seeds)))
    t_all = time.perf_counter()
    acc: dict[str, list[float]] = {}
    tail: dict[str, list[float]] = {}
    loss: dict[str, list[float]] = {}
    sim_hours: dict[str, list[float]] = {}
    for seed in seeds:
        for frac in (0.0, 0.5, 0.9):
            for strategy in ("fedavg", "fedprox"):
                t0 = time.perf_counter()
                res = execute(build(experiment(strategy, frac, rounds, args.backend, seed)))
                key = f"{strategy}_{int(frac * 100)}"
                curve = [r.test_accuracy for r in res.history if r.test_accuracy == r.test_accuracy]
                acc.setdefault(key, []).append(round(res.history.final_accuracy, 4))
                tail.setdefault(key, []).append(round(float(np.mean(curve[-5:])), 4))
                loss.setdefault(key, []).append(round(res.history.last("train_loss"), 4))
                sim_hours.setdefault(key, []).append(round(res.history.last("sim_clock_s") / 3600, 4))
                print(
                    f"seed {seed} {key:12s} acc={acc[key][-1]:.4f} last5={tail[key][-1]:.4f} "
                    f"wall={time.perf_counter() - t0:.1f}s curve={[round(c, 3) for c in curve]}",
                    flush=True,
                )
    gaps = [round(100 * (p - a), 2) for p, a in zip(acc["fedprox_90"], acc["fedavg_90"], strict=True)]
    tail_gaps = [round(100 * (p - a), 2) for p, a in zip(tail["fedprox_90"], tail["fedavg_90"], strict=True)]
    print(
        json.dumps(
            {
                "workload": "W1-stragglers",
                "backend": args.backend,
                "rounds": rounds,
                "seeds": seeds,
                "wall_s": round(time.perf_counter() - t_all, 2),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "final_accuracy": acc,
                "last5_eval_mean_accuracy": tail,
                "participants_mean_train_loss": loss,
                "sim_hours": sim_hours,
                "gap_90_points": gaps,
                "gap_90_points_mean": round(float(np.mean(gaps)), 2),
                "gap_90_last5_points": tail_gaps,
            }
        )
    )


if __name__ == "__main__":
    main()
