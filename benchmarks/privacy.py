"""Accuracy vs ε for DP-FedAvg on the digits data with a population where DP is meaningful.

scikit-learn's digits, 20 % held out centrally, the other 80 % split IID over 1,000 clients
(about 1.4 examples each, as in cross-device FL), Poisson sampling of 100 expected clients
per round (q = 0.1), uniform weighting with the fixed denominator, clipping bound C. For
every target ε ∈ {1, 3, 8} at δ = 1e-5 the noise multiplier is planned with dp-accounting
for the whole run (``fedge.privacy.plan_noise``) and the run is built and executed through
``fedge.experiment`` with a ``[privacy]`` section; ε = ∞ is the same run without DP.

Prints one line per ε, then one JSON line with ``accuracy[eps]``, ``noise_multiplier[eps]``,
``reported_epsilon[eps]`` (what the run's history says after its last round) and
``wall_ratio[eps]`` (that run's time over the non-private run's, measured in this run
after an untimed two-round warm-up).

    python benchmarks/privacy.py            # full
    python benchmarks/privacy.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit

DELTA = 1e-5


def dataset(num_clients: int, seed: int) -> Any:
    import numpy as np

    from fedge.data.datasets import federate, load_digits_arrays

    x, y = load_digits_arrays()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    held = order[: len(y) // 5]
    pool = order[len(y) // 5 :]
    data = federate(
        x[pool],
        y[pool],
        num_clients=num_clients,
        scheme="iid",
        test_fraction=0.0,
        rng=rng,
        name="digits",
        num_classes=10,
    )
    data.x_central, data.y_central = x[held], y[held]
    return data


def config(args: argparse.Namespace, z: float | None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "seed": args.seed,
        "rounds": args.rounds,
        "data": {"num_clients": args.clients},
        "model": {"name": args.model, "framework": "numpy"},
        "training": {
            "clients_per_round": args.cohort,
            "local_epochs": args.local_epochs,
            "lr": args.lr,
            "batch_size": 10,
        },
        "strategy": {"name": "fedavg", "weighting": "uniform", "server_lr": args.server_lr},
        "evaluation": {"every": args.rounds},
    }
    if z is not None:
        raw["privacy"] = {
            "mode": "central",
            "noise_multiplier": z,
            "clip_norm": args.clip,
            "sampling": "poisson",
            "accountant": "rdp",
            "delta": DELTA,
        }
    return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--cohort", type=int, default=100)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--server-lr", type=float, default=1.0)
    ap.add_argument("--local-epochs", type=int, default=5)
    ap.add_argument("--model", default="logreg", choices=("logreg", "mlp"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.rounds = args.rounds or (10 if args.quick else 60)

    import fedge.privacy  # noqa: F401  (registers the [privacy] section)
    from fedge.config.schema import from_dict
    from fedge.federation import build, execute
    from fedge.privacy import plan_noise

    data = dataset(args.clients, args.seed)
    t0 = time.perf_counter()
    warm = config(args, None)
    warm["rounds"] = 2
    execute(build(from_dict(warm), dataset=data))
    results: dict[str, dict[str, Any]] = {}
    for eps in ("inf", 8.0, 3.0, 1.0):
        z = (
            None
            if eps == "inf"
            else plan_noise(
                epsilon=float(eps),
                delta=DELTA,
                rounds=args.rounds,
                cohort=args.cohort,
                population=args.clients,
                sampling="poisson",
                accountant="rdp",
            )
        )
        t = time.perf_counter()
        result = execute(build(from_dict(config(args, z)), dataset=data))
        wall = time.perf_counter() - t
        last = result.history.rounds[-1].extra
        key = str(eps)
        results[key] = {
            "accuracy": float(result.history.final_accuracy),
            "z": z,
            "reported_epsilon": last.get("epsilon"),
            "wall": wall,
            "rounds": len(result.history),
            "privacy": last.get("privacy"),
        }
        print(
            f"eps={key:4s} z={z if z is None else round(z, 4)} acc={results[key]['accuracy']:.4f} "
            f"reported eps={last.get('epsilon')} rounds={len(result.history)} ({wall:.1f}s)",
            flush=True,
        )
    ref = results["inf"]["wall"]
    emit(
        {
            "workload": "privacy-digits",
            "backend": "sequential",
            "wall_s": round(time.perf_counter() - t0, 2),
            "population": args.clients,
            "clients_per_round": args.cohort,
            "sampling": f"poisson (add/remove-one client), q = {args.cohort / args.clients:g}",
            "accountant": "rdp (dp-accounting)",
            "delta": DELTA,
            "rounds": args.rounds,
            "clip_norm": args.clip,
            "model": args.model,
            "accuracy": {k: round(v["accuracy"], 4) for k, v in results.items()},
            "noise_multiplier": {k: (None if v["z"] is None else round(v["z"], 4)) for k, v in results.items()},
            "reported_epsilon": {k: v["reported_epsilon"] for k, v in results.items()},
            "wall_ratio": {k: round(v["wall"] / ref, 3) for k, v in results.items()},
            "quick": args.quick,
        }
    )


if __name__ == "__main__":
    main()
