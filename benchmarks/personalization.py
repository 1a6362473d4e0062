"""W9: personalisation and heterogeneous models on the digits, with strong label skew.

Part 1 — digits, Dirichlet(0.1) label skew over 50 clients (each client's own 20 % test
split): global FedAvg against FedAvg + local fine-tuning, Ditto and FedRep. Every client's
personal model is evaluated on its own test data after the last round, next to the global
FedAvg model on the same clients: the mean over clients and the mean of the worst 10 %.

Part 2 — HeteroFL on a W7 fleet (50 % Pi Zero 2 W, 25 % Pi 5, 25 % Orin Nano) with a
round deadline under which the full-width MLP (64 -> 256 -> 256 -> 10) does not fit a Pi
Zero: HeteroFL gives each device the widest sub-model the cost model says fits (memory,
FLOPs, deadline) and includes every device; the baseline trains the full model on the
devices that fit it (the deadline policy drops the others). Accuracy per device class on
the devices' own test data, and how many devices could take part.

Part 3 — driver state: the four methods of Part 1 on the synthetic car fleet of
``examples/driver_state`` (``generate.py``: per-car sensor kits, driver baselines and state
mixes; key -> value telemetry hashed on each car with :func:`fedge.data.keyvalue.load_keyvalue`
under a fixed benchmark secret). Each car is one client with its own 20 % test split; the
experiment is built as ``examples/driver_state/run.py`` builds it (``build(exp,
dataset=...)``), without its device simulation and secure aggregation (neither is
what this compares).

Everything goes through ``fedge.experiment`` (the config sections a user would write).
Prints a line per run, then one JSON line.

    python benchmarks/personalization.py            # the default run (a few minutes on one core)
    python benchmarks/personalization.py --quick    # smoke run
    python benchmarks/personalization.py --only driver_state   # Part 3 alone
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit

ROOT = Path(__file__).resolve().parent.parent
DRIVER_STATE = ROOT / "examples" / "driver_state"
STATES = ["alert", "drowsy", "distracted"]
FLEET = {"pi-zero-2w": 0.5, "pi5": 0.25, "orin-nano": 0.25}
METHODS = ("fedavg", "finetune", "ditto", "fedrep")


def personal_config(method: str, rounds: int, clients: int) -> dict[str, Any]:
    return {
        "seed": 0,
        "rounds": rounds,
        "data": {"dataset": "digits", "num_clients": clients, "partition": "dirichlet", "alpha": 0.1},
        "model": {"name": "mlp", "hidden": [64]},
        "strategy": {"name": method},
        "training": {"clients_per_round": 10, "local_epochs": 2, "batch_size": 10, "lr": 0.05},
        "personalization": {
            "ditto_lambda": 0.1,
            "personal_epochs": 2,
            "head_epochs": 5,
            "finetune_epochs": 5,
            "finetune_lr": 0.05,
        },
        "evaluation": {"every": rounds, "federated_clients": -1},
    }


def driver_config(method: str, rounds: int, cars: int) -> dict[str, Any]:
    """The ``[model]``/``[training]`` of ``examples/driver_state/experiment.toml``, with Part 1's personalisation."""
    raw = personal_config(method, rounds, cars)
    raw["data"] = {"num_clients": cars, "test_fraction": 0.2}
    raw["model"] = {"name": "mlp", "hidden": [32]}
    raw["training"] = {"clients_per_round": 12, "local_epochs": 2, "batch_size": 16, "lr": 0.05}
    return raw


def driver_fleet(folder: Path, cars: int, records: int, dim: int) -> Any:
    """Write the example's car fleet under ``folder`` and load it hashed (fixed secret, so runs repeat)."""
    from fedge.data.keyvalue import load_keyvalue

    secret = hashlib.sha256(b"fedge personalization benchmark").digest()
    (folder / "fleet.secret").write_text(secret.hex() + "\n")
    args = ["--out", str(folder), "--cars", str(cars), "--records", str(records), "--seed", "0"]
    subprocess.run(
        [sys.executable, str(DRIVER_STATE / "generate.py"), *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return load_keyvalue(folder, secret=secret, dim=dim, labels=STATES, test_fraction=0.2, seed=0)


def personal_row(result: Any, wall: float) -> dict[str, Any]:
    extra = result.history.rounds[-1].extra
    row = {
        "global_mean": extra["client_acc_mean"],
        "global_worst10": extra["client_acc_worst10"],
        "personal_mean": extra.get("personal_acc_mean", extra["client_acc_mean"]),
        "personal_worst10": extra.get("personal_acc_worst10", extra["client_acc_worst10"]),
        "uplink_bytes_per_client": result.history.rounds[-1].uplink_bytes
        / max(result.history.rounds[-1].participants, 1),
        "wall_s": round(wall, 2),
    }
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def driver_part(rounds: int, cars: int, records: int, dim: int) -> dict[str, Any]:
    from fedge.config.schema import from_dict
    from fedge.federation import build, execute

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        kv = driver_fleet(Path(tmp), cars, records, dim)
    sizes = kv.dataset.num_examples()
    out["fleet"] = {
        "cars": kv.dataset.num_clients,
        "records": kv.stats.kept,
        "skipped": kv.stats.skipped_total,
        "dim": dim,
        "train_windows_per_car_median": int(np.median(sizes)),
        "key_collision_rate": round(kv.collisions.rate, 4),
    }
    for method in METHODS:
        t0 = time.perf_counter()
        exp = from_dict(driver_config(method, rounds, kv.dataset.num_clients))
        result = execute(build(exp, dataset=kv.dataset))
        row = personal_row(result, time.perf_counter() - t0)
        out[method] = row
        print(
            f"driver    {method:9s} personal mean {row['personal_mean']:.4f} worst10 {row['personal_worst10']:.4f} "
            f"(global on the same cars {row['global_mean']:.4f} / {row['global_worst10']:.4f}) {row['wall_s']:.1f}s",
            flush=True,
        )
    return out


def gains(part: dict[str, Any]) -> tuple[str, float, float]:
    """The best personalised method by mean, and its gains (points) over global FedAvg on the same clients."""
    base = part["fedavg"]
    best = max(("finetune", "ditto", "fedrep"), key=lambda m: part[m]["personal_mean"])
    return (
        best,
        round(100 * (part[best]["personal_mean"] - base["global_mean"]), 2),
        round(100 * (part[best]["personal_worst10"] - base["global_worst10"]), 2),
    )


def hetero_config(method: str, rounds: int, clients: int, deadline_s: float) -> dict[str, Any]:
    return {
        "seed": 0,
        "rounds": rounds,
        "data": {"dataset": "digits", "num_clients": clients, "partition": "dirichlet", "alpha": 0.5},
        "model": {"name": "mlp", "hidden": [256, 256]},
        "strategy": {"name": method},
        "training": {"clients_per_round": 10, "local_epochs": 2, "batch_size": 10, "lr": 0.05},
        "devices": {"enabled": True, "fleet": FLEET, "policy": "deadline", "deadline_s": deadline_s},
        "heterofl": {"ratios": [1.0, 0.5, 0.25, 0.125]},
        "evaluation": {"every": rounds, "federated_clients": -1},
    }


def run_one(raw: dict[str, Any]) -> tuple[Any, Any, float]:
    from fedge.config.schema import from_dict
    from fedge.federation import build, execute

    t0 = time.perf_counter()
    built = build(from_dict(raw))
    result = execute(built)
    return built, result, time.perf_counter() - t0


def personal_part(rounds: int, clients: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in METHODS:
        _, result, wall = run_one(personal_config(method, rounds, clients))
        row = out[method] = personal_row(result, wall)
        print(
            f"{method:9s} personal mean {row['personal_mean']:.4f} worst10 {row['personal_worst10']:.4f} "
            f"(global on the same clients {row['global_mean']:.4f} / {row['global_worst10']:.4f}) {wall:.1f}s",
            flush=True,
        )
    return out


def hetero_part(rounds: int, clients: int, deadline_s: float) -> dict[str, Any]:
    from fedge.devices.widths import choose_widths
    from fedge.personalization import train_config, width_costs

    out: dict[str, Any] = {}
    for method in ("heterofl", "fedavg"):
        built, result, wall = run_one(hetero_config(method, rounds, clients, deadline_s))
        _, policy = built.extras()
        assert policy is not None
        names = [p.name for p in policy.fleet.profiles]
        ratios = [1.0, 0.5, 0.25, 0.125] if method == "heterofl" else [1.0]
        costs = width_costs(built.exp, built.data, ratios)
        chosen, _ = choose_widths(
            policy.fleet.profiles,
            list(policy.fleet.speed),
            list(built.data.num_examples()),
            train_config(built.exp),
            costs,
            deadline_s=deadline_s,
        )
        per_class: dict[str, float] = {}
        part: dict[str, float] = {}
        widths: dict[str, list[float]] = {}
        for name in FLEET:
            ids = [c for c, n in enumerate(names) if n == name]
            per_class[name] = round(float(np.mean([result.client_accuracy[c] for c in ids])), 4)
            part[name] = round(sum(1 for c in ids if c in chosen) / len(ids), 4)
            widths[name] = sorted({chosen[c] for c in ids if c in chosen})
        out[method] = {
            "class_accuracy": per_class,
            "class_share_taking_part": part,
            "class_widths": widths,
            "devices_taking_part": len(chosen),
            "devices": clients,
            "central_accuracy": round(result.history.final_accuracy, 4),
            "wall_s": round(wall, 2),
        }
        print(
            f"{method:9s} devices taking part {len(chosen)}/{clients}, per class {per_class}, widths {widths}, "
            f"central {result.history.final_accuracy:.4f} {wall:.1f}s",
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rounds")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--deadline-s", type=float, default=0.3)
    ap.add_argument("--only", choices=("digits", "heterofl", "driver_state"), help="run one part alone")
    ap.add_argument("--cars", type=int, default=60, help="driver state: cars in the fleet")
    ap.add_argument("--car-records", type=int, default=150, help="driver state: typical windows per car")
    ap.add_argument("--car-rounds", type=int, default=0, help="driver state: rounds (default 30, 5 with --quick)")
    ap.add_argument("--dim", type=int, default=1024, help="driver state: hashed feature dimension")
    args = ap.parse_args()
    from fedge.core.threads import apply_threads

    apply_threads(1)
    rounds = args.rounds or (5 if args.quick else 40)
    car_rounds = args.car_rounds or (5 if args.quick else 30)
    t0 = time.perf_counter()
    record: dict[str, Any] = {"workload": "W9-personalization", "backend": "sequential"}
    if args.only in (None, "digits"):
        personal = personal_part(rounds, args.clients)
        best, gain, worst = gains(personal)
        record.update(
            {
                "rounds": rounds,
                "clients": args.clients,
                "dirichlet_alpha": 0.1,
                "methods": personal,
                "best_method": best,
                "personal_gain_points": gain,
                "worst10_gain_points": worst,
            }
        )
    if args.only in (None, "heterofl"):
        hetero = hetero_part(rounds, args.clients, args.deadline_s)
        small = "pi-zero-2w"
        record.update(
            {
                "rounds": rounds,
                "clients": args.clients,
                "heterofl": hetero["heterofl"],
                "exclude_small": hetero["fedavg"],
                "heterofl_all_devices": hetero["heterofl"]["devices_taking_part"] == args.clients,
                "heterofl_devices_taking_part": hetero["heterofl"]["devices_taking_part"],
                "exclude_devices_taking_part": hetero["fedavg"]["devices_taking_part"],
                "heterofl_class_accuracy": hetero["heterofl"]["class_accuracy"],
                "exclude_class_accuracy": hetero["fedavg"]["class_accuracy"],
                "small_device_gain_points": round(
                    100 * (hetero["heterofl"]["class_accuracy"][small] - hetero["fedavg"]["class_accuracy"][small]), 2
                ),
                "deadline_s": args.deadline_s,
            }
        )
    if args.only in (None, "driver_state"):
        driver = driver_part(car_rounds, args.cars, args.car_records, args.dim)
        best, gain, worst = gains(driver)
        record.update(
            {
                "driver_state_rounds": car_rounds,
                "driver_state_fleet": driver.pop("fleet"),
                "driver_state_methods": driver,
                "driver_state_global_mean": driver["fedavg"]["global_mean"],
                "driver_state_global_worst10": driver["fedavg"]["global_worst10"],
                "driver_state_personal_means": {m: driver[m]["personal_mean"] for m in METHODS},
                "driver_state_personal_worst10": {m: driver[m]["personal_worst10"] for m in METHODS},
                "driver_state_best_method": best,
                "driver_state_personal_gain_points": gain,
                "driver_state_worst10_gain_points": worst,
            }
        )
    record["wall_s"] = round(time.perf_counter() - t0, 2)
    record["quick"] = args.quick
    emit(record)


if __name__ == "__main__":
    main()
