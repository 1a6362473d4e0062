"""W1 (BENCHMARKS.md): FedAvg vs FedProx (mu = 1) on FedProx's Synthetic(1, 1).

30 devices, multinomial logistic regression, 10 devices per round, 20 local epochs,
batch 10, SGD lr 0.01, 200 rounds, weighted by sample count. Prints test accuracy every
10 rounds on stderr and one JSON line with the final figures.

    python benchmarks/w1_fedprox.py            # the full workload
    python benchmarks/w1_fedprox.py --quick    # 20 rounds, for a smoke test
    python benchmarks/w1_fedprox.py --quick --framework torch --backend vectorized
    python benchmarks/w1_fedprox.py --fast     # FedAvg, fedge's auto backend against a plain PyTorch loop

``--fast`` runs FedAvg twice in this process on the same data: fedge (``auto`` backend,
the torch logistic regression, which trains through the dense kernel) and the plain
PyTorch loop BENCHMARKS.md defines (one reused ``nn.Linear``, ``torch.optim.SGD``, slicing,
a sample-weighted average), on the same sampled clients and the same mini-batches. It
checks that both end with the same weights and prints ``ratio_to_plain_loop`` (fedge's
time over the loop's) with each one's accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _common import emit, plain_fedavg

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


def plain_loop(built, rounds: int, seed: int) -> tuple[list[np.ndarray], float, float]:
    """BENCHMARKS.md's reference loop over ``built``'s data and sampled clients: final weights, seconds, accuracy."""
    from torch import nn

    t0 = time.perf_counter()
    glob, _ = plain_fedavg(built.data, nn.Linear(60, 10), built.initial, rounds, built.sampling, built.train, seed)
    seconds = time.perf_counter() - t0
    x_test, y_test = built.data.central()
    _loss, acc = built.learner.evaluate(glob, x_test, y_test)
    return glob, seconds, float(acc)


def fast(args: argparse.Namespace, rounds: int) -> None:
    """FedAvg with fedge's auto backend against the plain PyTorch loop, same clients and batches."""
    import torch

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    exp = {
        "seed": args.seed,
        "rounds": rounds,
        "data": {
            "dataset": "synthetic",
            "num_clients": 30,
            "test_fraction": 0.1,
            "synthetic_alpha": args.alpha,
            "synthetic_beta": args.beta,
        },
        "model": {"name": "logreg", "framework": "torch"},
        "strategy": {"name": "fedavg"},
        "training": {"clients_per_round": 10, "local_epochs": 20, "batch_size": 10, "lr": 0.01, "backend": "auto"},
        "evaluation": {"every": rounds},
    }
    built = build(from_dict(exp))
    t0 = time.perf_counter()
    result = execute(built)
    fedge_s = time.perf_counter() - t0
    ref, ref_s, ref_acc = plain_loop(built, rounds, args.seed)
    params = result.state.params
    diff = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(params, ref, strict=True))
    scale = max(float(np.max(np.abs(b))) for b in ref)
    emit(
        {
            "workload": f"W1 synthetic({args.alpha:g},{args.beta:g}) fedavg",
            "backend": str(result.history.rounds[-1].extra.get("backend", "auto")),
            "rounds": rounds,
            "fedge_s": round(fedge_s, 2),
            "reference_s": round(ref_s, 2),
            "ratio_to_plain_loop": round(fedge_s / ref_s, 4),
            "fedge_test_accuracy": round(result.history.final_accuracy, 4),
            "reference_test_accuracy": round(ref_acc, 4),
            "max_abs_weight_diff": diff,
            "max_abs_weight": scale,
            "wall_s": round(time.perf_counter() - t_start, 2),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="20 rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="sequential")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--framework", default="numpy", choices=("numpy", "torch"), help="the logistic regression's")
    ap.add_argument(
        "--fast", action="store_true", help="FedAvg: fedge's auto backend against the plain PyTorch loop (a ratio)"
    )
    args = ap.parse_args()
    rounds = 20 if args.quick else args.rounds
    if args.fast:
        fast(args, rounds)
        return
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
