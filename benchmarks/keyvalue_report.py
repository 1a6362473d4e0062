"""Masked key-value loading and report rendering: what keyed hashing and the report cost.

Workload: the driver-state fleet generator (``examples/driver_state/generate.py``), N cars
written as JSON lines. Timed in this run:

* ``json_s`` — reference: reading and parsing every line with ``json.loads``, nothing else;
* ``keyvalue_s`` — :func:`fedge.data.keyvalue.load_keyvalue`: parse, validate, HMAC-SHA256
  hash every key, build the federation; ``keyvalue_vs_json`` is their ratio;
* collisions measured at several ``dim`` against ``1 - (1 - 1/dim)^(keys-1)``;
* ``report_s`` — ``write_report`` of a synthetic R-round run folder with every optional
  value; ``report_vs_csv`` is its ratio to writing that history as ``metrics.csv`` with
  fedge's own writer (the cheapest thing a run does with its history).

    python benchmarks/keyvalue_report.py            # 200 cars, 1,000-round report
    python benchmarks/keyvalue_report.py --quick    # 20 cars, 50 rounds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import emit

from fedge.data.keyvalue import KeyHasher, collisions, load_keyvalue
from fedge.report.html import write_report
from fedge.simulation.history import History, RoundRecord, write_csv, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"benchmark-fleet-secret-0123456789"


def generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen", ROOT / "examples" / "driver_state" / "generate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def history(rounds: int) -> History:
    h = History()
    for r in range(1, rounds + 1):
        h.append(
            RoundRecord(
                round=r,
                participants=20 - r % 4,
                failed=r % 4,
                train_loss=2 / math.sqrt(r),
                test_loss=2.1 / math.sqrt(r),
                test_accuracy=1 - 0.7 / math.sqrt(r),
                uplink_bytes=50_000,
                downlink_bytes=60_000,
                wall_s=0.1,
                dropped={"deadline": list(range(r % 4))},
                extra={
                    "sim_clock_s": 60.0 * r,
                    "energy_j": 30.0 + r % 7,
                    "epsilon": 0.05 * math.sqrt(r),
                    "device_mix": {"zonal-ecu": 14, "orin-nano": 6},
                },
            )
        )
    return h


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cars, rounds = (20, 50) if args.quick else (200, 1000)
    t_all = time.perf_counter()
    gen = generator()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "fleet"
        data.mkdir()
        lines = 0
        for k in range(cars):
            rows = gen.make_car(k, rng, 150, 1.0)
            (data / f"car-{k:03d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            lines += len(rows)
        t0 = time.perf_counter()
        parsed = 0
        for f in sorted(data.glob("*.jsonl")):
            for line in f.read_text().splitlines():
                json.loads(line)
                parsed += 1
        json_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        kv = load_keyvalue(data, secret=SECRET, dim=1024, labels=list(gen.STATES))
        keyvalue_s = time.perf_counter() - t0
        keys = {
            k
            for f in sorted(data.glob("*.jsonl"))
            for line in f.read_text().splitlines()
            for k in json.loads(line)["features"]
        }
        coll = {}
        for dim in (128, 1024, 8192):
            c = collisions(keys, KeyHasher(SECRET, dim))
            coll[str(dim)] = {"rate": round(c.rate, 4), "expected": round(c.expected_rate, 4)}
            print(
                f"dim {dim:5d}: {c.colliding_keys}/{c.keys} keys share a bucket "
                f"(rate {c.rate:.3f}, uniform hashing {c.expected_rate:.3f})",
                file=sys.stderr,
            )
        run = Path(tmp) / "run"
        run.mkdir()
        h = history(rounds)
        write_jsonl(h, run / "metrics.jsonl")
        (run / "summary.json").write_text(
            json.dumps({"client_accuracy": {str(i): float(v) for i, v in enumerate(rng.beta(8, 2, 200))}})
        )
        (run / "partition.json").write_text(
            json.dumps(
                {"dataset": "fleet", "num_classes": 3, "label_histogram": rng.integers(0, 50, (200, 3)).tolist()}
            )
        )
        t0 = time.perf_counter()
        write_csv(h, Path(tmp) / "metrics.csv")
        csv_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = write_report([run], Path(tmp) / "report")
        report_s = time.perf_counter() - t0
        pngs = len(list(out.parent.glob("*.png")))
    emit(
        {
            "workload": "keyvalue+report",
            "backend": "cpu",
            "quick": args.quick,
            "cars": cars,
            "records": lines,
            "kept": kv.stats.kept,
            "skipped": kv.stats.skipped_total,
            "distinct_keys": len(keys),
            "json_s": round(json_s, 3),
            "keyvalue_s": round(keyvalue_s, 3),
            "keyvalue_vs_json": round(keyvalue_s / json_s, 2),
            "records_per_s": round(kv.stats.lines / keyvalue_s),
            "collisions": coll,
            "report_rounds": rounds,
            "report_pngs": pngs,
            "report_s": round(report_s, 2),
            "csv_s": round(csv_s, 4),
            "report_vs_csv": round(report_s / csv_s, 1),
            "wall_s": round(time.perf_counter() - t_all, 2),
        }
    )


if __name__ == "__main__":
    main()
