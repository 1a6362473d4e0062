"""Train the driver-state classifier across the fleet, write the report, export an int8 model.

Steps:

1. every car hashes its own telemetry keys with the fleet secret
   (:func:`fedge.data.keyvalue.load_keyvalue`; HMAC-SHA256 feature hashing), so only a
   fixed-size vector of hashed feature weights is ever used for training;
2. the experiment in ``experiment.toml`` runs in simulation: zonal controllers and
   Jetson-class units from the device catalog, secure aggregation of the updates;
3. ``fedge report`` of the run folder (HTML + PNGs);
4. the final model exported to ONNX and quantised to int8 (ONNX Runtime), checked on the
   pooled held-out windows.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fedge.cli.progress import ProgressCallback
from fedge.config import load
from fedge.data.keyvalue import load_keyvalue
from fedge.experiment import write_outputs
from fedge.federation import build, execute
from fedge.report import write_report

HERE = Path(__file__).resolve().parent
STATES = ["alert", "drowsy", "distracted"]


def export_int8(built, out: Path) -> dict[str, float]:
    """ONNX export and int8 quantisation of the final model, scored on the held-out windows."""
    from fedge.clients.torch_learner import set_params
    from fedge.experiment import load_params_npz
    from fedge.export.onnx_io import accuracy, export_onnx, predict, quantize, session

    module = built.learner.module
    set_params(module, load_params_npz(out / "model.npz"))
    x, y = built.data.central()
    fp32 = export_onnx(module, built.data.feature_shape, out / "model.onnx")
    int8 = quantize(fp32, out / "model.int8.onnx", "int8", calibration=built.data.x[built.data.train.values][:512])
    return {
        "onnx_fp32_accuracy": accuracy(predict(session(fp32), x), y),
        "onnx_int8_accuracy": accuracy(predict(session(int8), x), y),
        "onnx_fp32_bytes": fp32.stat().st_size,
        "onnx_int8_bytes": int8.stat().st_size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "experiment.toml")
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--secret-file", type=Path, help="fleet secret (default: DATA/fleet.secret)")
    ap.add_argument("--dim", type=int, default=1024, help="hashed feature dimension")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--output", type=Path)
    ap.add_argument("--dashboard", action="store_true", help="serve the live dashboard")
    ap.add_argument("--no-export", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    if not any(args.data.glob("car-*.jsonl")):
        subprocess.run([sys.executable, str(HERE / "generate.py"), "--out", str(args.data)], check=True)
    exp = load(str(args.config))
    if args.rounds:
        exp.rounds = args.rounds
    if args.dashboard:
        exp.section("dashboard").enabled = True
    secret = bytes.fromhex((args.secret_file or args.data / "fleet.secret").read_text().strip())
    kv = load_keyvalue(
        args.data, secret=secret, dim=args.dim, labels=STATES, test_fraction=exp.data.test_fraction, seed=exp.seed
    )
    print(
        f"{kv.stats.kept} records from {kv.dataset.num_clients} cars; skipped "
        f"{dict(kv.stats.skipped) or 'none'}; {kv.collisions.keys} distinct keys in {args.dim} "
        f"buckets, {kv.collisions.colliding_keys} share a bucket "
        f"(rate {kv.collisions.rate:.3f}, uniform hashing predicts {kv.collisions.expected_rate:.3f})",
        file=sys.stderr,
    )
    exp.data.num_clients = kv.dataset.num_clients
    built = build(exp, dataset=kv.dataset)
    result = execute(built, [ProgressCallback()])
    out = write_outputs(built, result, args.output or Path(exp.output_dir()), time.perf_counter() - t0)
    (out / "keyvalue.json").write_text(
        json.dumps(
            {
                "read": {"lines": kv.stats.lines, "kept": kv.stats.kept, "skipped": dict(kv.stats.skipped)},
                "collisions": kv.collisions.to_json(),
                "labels": kv.label_names,
            },
            indent=2,
        )
    )
    report = write_report([out])
    h = result.history
    fig: dict[str, object] = {
        "workload": "driver_state",
        "rounds": len(h),
        "cars": kv.dataset.num_clients,
        "final_test_accuracy": round(h.final_accuracy, 4),
        "final_fed_test_accuracy": round(h.last("fed_test_accuracy"), 4),
        "sim_hours": round(h.last("sim_clock_s") / 3600, 3),
        "key_collision_rate": round(kv.collisions.rate, 4),
        "report": str(report),
    }
    if not args.no_export:
        fig.update({k: round(v, 4) for k, v in export_int8(built, out).items()})
    fig["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(fig))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
