"""Attack x defence on the digits default with 20 % malicious clients.

The digits default (100 clients, Dirichlet(0.5) label skew, the MLP) through
``fedge.experiment`` with these config changes: the NumPy MLP (so the 48-run table fits a
2-core machine), fewer rounds, and ``[attack]`` / ``[robust]`` sections. Every robust rule
weighs clients uniformly; the clean reference is plain FedAvg with no attack.

Prints the table, then one JSON line: ``table[attack][defence]`` final accuracy,
``clean_accuracy``, the best defence per attack and its gap to clean, and
``wall_ratio[defence]`` — that defence's total run time over FedAvg's in this run.

    python benchmarks/robustness.py            # full table
    python benchmarks/robustness.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit

ATTACKS = ["none", "label-flip", "sign-flip", "scaling", "gaussian", "alie"]
DEFENCES = ["fedavg", "median", "trimmed-mean", "krum", "multi-krum", "bulyan", "norm-bound", "centered-clip"]


def config(defence: str, attack: str, rounds: int, fraction: float) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "seed": 0,
        "rounds": rounds,
        "model": {"name": "mlp", "framework": "numpy"},
        "strategy": {"name": defence, "weighting": "uniform"},
        "robust": {"trim_fraction": 0.25},
        "evaluation": {"every": rounds},
    }
    if attack != "none":
        raw["attack"] = {"kind": attack, "fraction": fraction}
    return raw


def run_one(raw: dict[str, Any]) -> tuple[float, float]:
    from fedge.config.schema import from_dict
    from fedge.federation import build, execute

    t0 = time.perf_counter()
    result = execute(build(from_dict(raw)))
    return float(result.history.final_accuracy), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rounds, three attacks, four defences")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--fraction", type=float, default=0.2)
    args = ap.parse_args()
    import fedge.robust  # noqa: F401  (registers the strategies and sections)

    rounds = args.rounds or (5 if args.quick else 60)
    attacks = ["none", "sign-flip", "scaling"] if args.quick else ATTACKS
    defences = ["fedavg", "median", "krum", "centered-clip"] if args.quick else DEFENCES
    t0 = time.perf_counter()
    clean_raw = config("fedavg", "none", rounds, args.fraction)
    clean_raw["strategy"]["weighting"] = "examples"
    clean, _ = run_one(clean_raw)
    table: dict[str, dict[str, float]] = {}
    walls: dict[str, float] = dict.fromkeys(defences, 0.0)
    for attack in attacks:
        table[attack] = {}
        for defence in defences:
            acc, wall = run_one(config(defence, attack, rounds, args.fraction))
            table[attack][defence] = round(acc, 4)
            walls[defence] += wall
            print(f"{attack:11s} {defence:14s} acc={acc:.4f} ({wall:.1f}s)", flush=True)
    print(f"\nclean FedAvg (examples weighting): {clean:.4f}")
    print("attack      " + " ".join(f"{d[:12]:>12s}" for d in defences))
    for attack in attacks:
        print(f"{attack:11s} " + " ".join(f"{table[attack][d]:12.4f}" for d in defences))
    robust = [d for d in defences if d != "fedavg"]
    best = {a: max(robust, key=lambda d, a=a: table[a][d]) for a in attacks}
    emit(
        {
            "workload": "robustness-digits",
            "backend": "sequential",
            "wall_s": round(time.perf_counter() - t0, 2),
            "rounds": rounds,
            "malicious_fraction": args.fraction,
            "clean_accuracy": round(clean, 4),
            "table": table,
            "best_defence": best,
            "best_gap_to_clean": {a: round(clean - table[a][best[a]], 4) for a in attacks},
            "fedavg_drop": {a: round(clean - table[a]["fedavg"], 4) for a in attacks},
            "wall_ratio": {d: round(walls[d] / walls["fedavg"], 3) for d in defences},
            "quick": args.quick,
        }
    )


if __name__ == "__main__":
    main()
