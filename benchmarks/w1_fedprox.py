"""W1 (BENCHMARKS.md): FedAvg vs FedProx (mu = 1) on FedProx's Synthetic(1, 1).

30 devices, multinomial logistic regression, 10 devices per round, 20 local epochs,
batch 10, SGD lr 0.01, 200 rounds, weighted by sample count. Prints test accuracy every
10 rounds on stderr and one JSON line with the final figures.

    python benchmarks/w1_fedprox.py            # the full workload
    python benchmarks/w1_fedprox.py --quick    # 20 rounds, for a smoke test
    python benchmarks/w1_fedprox.py --quick --framework torch --backend vectorized
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import emit

from fedge.config import from_dict
from fedge.engine import Callback
from fedge.federation import build, execute


class TrainLoss(Callback):
    """The global objective on all devices' training data every 10 rounds (as the paper plots)."""

    def __init__(self, built, every: int) -> None:
        self.built, self.every, self.values = built, every, {}
        fd = built.data
        self.x, self.y = fd.x[fd.train.values], fd.y[fd.train.values]

    def on_round_end(self, record, state) -> None:
        if record.round % self.every == 0:
            loss, _ = self.built.learner.evaluate(state.params, self.x, self.y)
            self.values[record.round] = loss
            print(
                f"  round {record.round:4d}  test acc {record.test_accuracy:.4f}  train loss {loss:.4f}",
                file=sys.stderr,
            )


def run(strategy: dict, rounds: int, seed: int, backend: str, alpha: float, beta: float, framework: str) -> dict:
    exp = from_dict(
        {
            "seed": seed,
            "rounds": rounds,
            "data": {
                "dataset": "synthetic",
                "num_clients": 30,
                "test_fraction": 0.1,
                "synthetic_alpha": alpha,
                "synthetic_beta": beta,
            },
            "model": {"name": "logreg", "framework": framework},
            "strategy": strategy,
            "training": {"clients_per_round": 10, "local_epochs": 20, "batch_size": 10, "lr": 0.01, "backend": backend},
            "evaluation": {"every": 10},
        }
    )
    built = build(exp)
    tl = TrainLoss(built, 10)
    t0 = time.perf_counter()
    result = execute(built, [tl])
    h = result.history
    return {
        "final_test_accuracy": round(h.final_accuracy, 4),
        "final_train_loss": round(tl.values.get(rounds, float("nan")), 4),
        "accuracy_every_10": [round(r.test_accuracy, 4) for r in h if r.round % 10 == 0],
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="20 rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="sequential")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--framework", default="numpy", choices=("numpy", "torch"), help="the logistic regression's")
    args = ap.parse_args()
    rounds = 20 if args.quick else args.rounds
    t0 = time.perf_counter()
    out = {}
    for name, strategy in (("fedavg", {"name": "fedavg"}), ("fedprox", {"name": "fedprox", "mu": 1.0})):
        print(f"{name}:", file=sys.stderr)
        out[name] = run(strategy, rounds, args.seed, args.backend, args.alpha, args.beta, args.framework)
    emit(
        {
            "workload": f"W1 synthetic({args.alpha:g},{args.beta:g})",
            "backend": args.backend,
            "framework": args.framework,
            "rounds": rounds,
            "wall_s": round(time.perf_counter() - t0, 2),
            "fedavg_test_accuracy": out["fedavg"]["final_test_accuracy"],
            "fedprox_test_accuracy": out["fedprox"]["final_test_accuracy"],
            "fedavg_train_loss": out["fedavg"]["final_train_loss"],
            "fedprox_train_loss": out["fedprox"]["final_train_loss"],
            "fedavg_accuracy_every_10": out["fedavg"]["accuracy_every_10"],
            "fedprox_accuracy_every_10": out["fedprox"]["accuracy_every_10"],
        }
    )


if __name__ == "__main__":
    main()
