"""W5 — compression: every codec against float32 on W1 and the digits default.

For each workload and codec this runs the same seeded federated training and reports
the final accuracy, the accuracy change in points, the uplink and downlink bytes per
client per round (counted from the real encoded messages) and their reduction against
float32, and the wall time as a ratio to the float32 run of the same workload.

Both workloads use fedge's NumPy learners (same parameter layout as the PyTorch models;
much faster on a 2-core CPU for models this small):

* W1: FedProx Synthetic(1, 1), 30 devices, logistic regression, 10 devices per round,
  20 local epochs, batch 10, lr 0.01, 200 rounds (``--quick``: 20).
* digits: the ``fedge run`` default — 100 clients, Dirichlet(0.5), MLP 64-64-10, 20
  clients per round, 5 local epochs, 100 rounds (``--quick``: 10).

With ``--workload export`` (or ``all``) it also trains the digits default, writes its run
folder and exports it with ``fedge export``'s code: float32, dynamic int8 and static int8
ONNX; figures are the file size reduction against the float32 ONNX file and the ONNX
Runtime accuracy change on the held-out data.

Usage: ``python benchmarks/compression.py [--quick] [--workload w1|digits|both|export|all]``.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from typing import Any

CODECS: list[tuple[str, dict[str, Any]]] = [
    ("float32", {}),
    ("fp16", {"codec": "fp16"}),
    ("bf16", {"codec": "bf16"}),
    ("int8", {"codec": "int8"}),
    ("int8+zlib", {"codec": "int8", "entropy": "zlib"}),
    ("int8-rotated", {"codec": "int8", "rotate": True}),
    ("qsgd-s16", {"codec": "qsgd", "levels": 16}),
    ("qsgd-s4+zlib", {"codec": "qsgd", "levels": 4, "entropy": "zlib"}),
    ("sign-ef", {"codec": "sign"}),
    ("topk-1%-ef", {"codec": "topk", "k": 0.01}),
    ("topk-1%-ef-model", {"codec": "topk", "k": 0.01, "scope": "model"}),
    ("topk-1%-no-ef", {"codec": "topk", "k": 0.01, "error_feedback": "off"}),
    ("randk-10%-ef", {"codec": "randk", "k": 0.1}),
    ("float32+down-int8", {"downlink": "int8"}),
    ("int8+zlib+down-int8", {"codec": "int8", "entropy": "zlib", "downlink": "int8"}),
]


def experiment(workload: str, rounds: int, compression: dict[str, Any]) -> dict[str, Any]:
    if workload == "w1":
        raw: dict[str, Any] = {
            "seed": 0,
            "rounds": rounds,
            "data": {
                "dataset": "synthetic",
                "num_clients": 30,
                "test_fraction": 0.1,
                "synthetic_alpha": 1.0,
                "synthetic_beta": 1.0,
            },
            "model": {"name": "logreg", "framework": "numpy"},
            "training": {"clients_per_round": 10, "local_epochs": 20, "batch_size": 10, "lr": 0.01},
            "evaluation": {"every": 10},
        }
    else:
        raw = {"seed": 0, "rounds": rounds, "model": {"framework": "numpy"}, "evaluation": {"every": 10}}
    if compression:
        raw["compression"] = compression
    return raw


def run_one(workload: str, rounds: int, compression: dict[str, Any]) -> dict[str, float]:
    from fedge.config.schema import from_dict
    from fedge.federation import build, execute

    t0 = time.perf_counter()
    result = execute(build(from_dict(experiment(workload, rounds, compression))))
    wall = time.perf_counter() - t0
    hist = result.history
    trained = sum(int(r.extra.get("selected", r.participants)) for r in hist)
    received = sum(r.participants for r in hist)
    accs = [r.test_accuracy for r in hist if r.test_accuracy == r.test_accuracy]
    return {
        "final_accuracy": hist.final_accuracy,
        "mean_last3_accuracy": statistics.mean(accs[-3:]) if accs else float("nan"),
        "uplink_bytes_per_client_round": sum(r.uplink_bytes for r in hist) / max(received, 1),
        "downlink_bytes_per_client_round": sum(r.downlink_bytes for r in hist) / max(trained, 1),
        "wall_s": wall,
    }


def export_figures(rounds: int) -> dict[str, Any]:
    """Train the digits default, write its run folder, export float32 / dynamic / static int8."""
    import tempfile
    from pathlib import Path

    from fedge.config.schema import from_dict
    from fedge.experiment import write_outputs
    from fedge.export import ExportOptions, export_run
    from fedge.federation import build, execute

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        built = build(from_dict(experiment("digits", rounds, {})))
        result = execute(built)
        run_dir = write_outputs(built, result, Path(tmp) / "run", 0.0)
        out["run_final_accuracy"] = result.history.final_accuracy
        for mode in ("none", "dynamic", "int8"):
            rep, _ = export_run(run_dir, ExportOptions(device="orin-nano", quantize=mode, output=str(Path(tmp) / mode)))
            out[mode] = {
                "onnx_bytes": rep.onnx_bytes,
                "float32_onnx_bytes": rep.float32_onnx_bytes,
                "size_reduction": round(rep.size_ratio, 3),
                "accuracy_torch": rep.accuracy_torch,
                "accuracy_onnx": rep.accuracy_onnx,
                "accuracy_change_points": round(-rep.accuracy_drop_points, 3),
                "host_latency_ratio_vs_float32": round(rep.host_latency_ms / rep.host_latency_ms_float32, 3),
            }
            print(
                f"export {mode:8s} {rep.onnx_bytes:7d} B ({rep.size_ratio:.2f}x smaller)  "
                f"ORT acc {rep.accuracy_onnx:.4f} ({-rep.accuracy_drop_points:+.2f} pts)",
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    ap.add_argument("--workload", choices=("w1", "digits", "both", "export", "all"), default="both")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    workloads = {"both": ["w1", "digits"], "all": ["w1", "digits"], "export": []}.get(args.workload, [args.workload])
    rounds = {"w1": 20 if args.quick else 200, "digits": 10 if args.quick else 100}
    table: dict[str, list[dict[str, Any]]] = {}
    checks: dict[str, dict[str, Any]] = {}
    for wl in workloads:
        run_one(wl, 1, {})  # warm-up: dataset generation and imports are not part of any codec's time
        rows = []
        base: dict[str, float] = {}
        for name, comp in CODECS:
            res = run_one(wl, rounds[wl], comp)
            if name == "float32":
                base = res
            row = {
                "codec": name,
                **{k: round(v, 5) for k, v in res.items()},
                "accuracy_change_points": round(100 * (res["final_accuracy"] - base["final_accuracy"]), 3),
                "uplink_reduction": round(
                    base["uplink_bytes_per_client_round"] / res["uplink_bytes_per_client_round"], 3
                ),
                "downlink_reduction": round(
                    base["downlink_bytes_per_client_round"] / res["downlink_bytes_per_client_round"], 3
                ),
                "wall_ratio_vs_float32": round(res["wall_s"] / base["wall_s"], 3),
            }
            rows.append(row)
            print(
                f"{wl:6s} {name:22s} acc {res['final_accuracy']:.4f} ({row['accuracy_change_points']:+.2f} pts)"
                f"  up {res['uplink_bytes_per_client_round']:9.0f} B ({row['uplink_reduction']:7.2f}x)"
                f"  down {res['downlink_bytes_per_client_round']:9.0f} B ({row['downlink_reduction']:5.2f}x)"
                f"  wall x{row['wall_ratio_vs_float32']:.2f}",
                flush=True,
            )
        table[wl] = rows
        by = {r["codec"]: r for r in rows}
        checks[wl] = {
            "int8_points": by["int8"]["accuracy_change_points"],
            "int8_uplink_reduction": by["int8"]["uplink_reduction"],
            "int8_zlib_points": by["int8+zlib"]["accuracy_change_points"],
            "int8_zlib_uplink_reduction": by["int8+zlib"]["uplink_reduction"],
            "int8_within_0.5_at_4x": (
                abs(by["int8+zlib"]["accuracy_change_points"]) <= 0.5 and by["int8+zlib"]["uplink_reduction"] >= 4
            ),
            "topk_1pct_ef_points": by["topk-1%-ef"]["accuracy_change_points"],
            "topk_1pct_ef_uplink_reduction": by["topk-1%-ef"]["uplink_reduction"],
            "topk_within_2_at_30x": (
                by["topk-1%-ef"]["accuracy_change_points"] >= -2 and by["topk-1%-ef"]["uplink_reduction"] >= 30
            ),
            "topk_1pct_ef_model_points": by["topk-1%-ef-model"]["accuracy_change_points"],
            "topk_1pct_ef_model_uplink_reduction": by["topk-1%-ef-model"]["uplink_reduction"],
            "topk_model_within_2_at_30x": (
                by["topk-1%-ef-model"]["accuracy_change_points"] >= -2
                and by["topk-1%-ef-model"]["uplink_reduction"] >= 30
            ),
        }
    export = export_figures(rounds["digits"]) if args.workload in ("export", "all") else None
    out = {
        "workload": "W5",
        "backend": "sequential",
        "framework": "numpy",
        "quick": args.quick,
        "rounds": {wl: rounds[wl] for wl in workloads},
        "wall_s": round(time.perf_counter() - t_start, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "checks": checks,
        "table": table,
    }
    if export is not None:
        out["export"] = export
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
