"""Driver state on zonal vehicles: each car's zonal ECUs train, its gateway aggregates (HierFAVG).

Steps:

1. ``generate.py``'s cars (generated if absent) are split into zones: every 10-second window
   of a car becomes one window per zonal ECU holding only that zone's channels (and the
   ECU/route keys every zone sees), written once to ``data-zonal/`` as clients
   ``car-NNN.z1`` .. ``car-NNN.z3``, so a car's zones are consecutive clients;
2. every zone hashes its keys with the fleet secret (:func:`fedge.data.keyvalue.load_keyvalue`);
3. ``zonal.toml`` runs: ``[hierarchy]`` puts each car's gateway between its zones and the
   cloud; the same rounds with ``relay = "forward"`` (flat FL over the same car network)
   are the reference for cloud-link bytes, simulated time and energy.

The last line printed is one JSON object with the figures of both runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fedge.config import load
from fedge.data.keyvalue import load_keyvalue
from fedge.experiment import write_outputs
from fedge.federation import build, execute
from fedge.hierarchy import tier_totals

HERE = Path(__file__).resolve().parent
STATES = ["alert", "drowsy", "distracted"]
ZONES = {
    "z1": ("cabin.dms.", "cabin.radar."),  # cabin: driver camera and cabin radar
    "z2": ("chassis.",),  # chassis: steering, lane position, pedals
    "z3": ("hmi.",),  # HMI: infotainment and phone
}
SHARED = ("oem.", "route.")
"""Keys every zone's ECU sees: its platform's ECU keys and the route markers."""


def split_zones(cars: Path, out: Path) -> int:
    """Write each car's windows as one file per zone into the new folder ``out``; returns the windows written."""
    out.mkdir(parents=True)
    total = 0
    for path in sorted(cars.glob("car-*.jsonl")):
        zones: dict[str, list[str]] = {z: [] for z in ZONES}
        for line in path.read_text().splitlines():
            row = json.loads(line)
            feats = row.get("features", {})
            for z, prefixes in ZONES.items():
                mine = {k: v for k, v in feats.items() if k.startswith(prefixes + SHARED)}
                zones[z].append(json.dumps({**row, "client_id": f"{row['client_id']}.{z}", "features": mine}))
        for z, rows in zones.items():
            (out / f"{path.stem}.{z}.jsonl").write_text("".join(r + "\n" for r in rows))
            total += len(rows)
    return total


def figures(result: Any) -> dict[str, Any]:
    h = result.history
    t = tier_totals(h) or {}
    return {
        "final_test_accuracy": round(h.final_accuracy, 4),
        "wan_mb": round(t["wan_bytes"] / 1e6, 3),
        "lan_mb": round(t["lan_bytes"] / 1e6, 3),
        "sim_s": round(t["sim_clock_s"], 2),
        "zone_energy_j": round(t["device_energy_j"], 1),
        "gateway_energy_j": round(t["gateway_energy_j"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "zonal.toml")
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--zonal-data", type=Path, default=HERE / "data-zonal")
    ap.add_argument("--dim", type=int, default=1024, help="hashed feature dimension")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()

    t0 = time.perf_counter()
    if not any(args.data.glob("car-*.jsonl")):
        subprocess.run([sys.executable, str(HERE / "generate.py"), "--out", str(args.data)], check=True)
    if not args.zonal_data.exists():
        n = split_zones(args.data, args.zonal_data)
        print(f"split the cars into {len(ZONES)} zones each: {n} zone windows in {args.zonal_data}", file=sys.stderr)
    exp = load(str(args.config))
    if args.rounds:
        exp.rounds = args.rounds
    secret = bytes.fromhex((args.data / "fleet.secret").read_text().strip())
    kv = load_keyvalue(
        args.zonal_data, secret=secret, dim=args.dim, labels=STATES, test_fraction=exp.data.test_fraction, seed=exp.seed
    )
    exp.data.num_clients = kv.dataset.num_clients
    built = build(exp, dataset=kv.dataset)
    result = execute(built)
    out = write_outputs(built, result, args.output or Path(exp.output_dir()), time.perf_counter() - t0)
    tree = exp.section("hierarchy")
    kappa1, zones = tree.kappa1, tree.zones_per_vehicle
    tree.relay, tree.kappa1 = "forward", 1
    flat = execute(build(exp, dataset=kv.dataset))
    h, f = figures(result), figures(flat)
    print(
        json.dumps(
            {
                "workload": "driver_state_zonal",
                "cars": kv.dataset.num_clients // zones,
                "zones": kv.dataset.num_clients,
                "rounds": len(result.history),
                "kappa1": kappa1,
                "hierarchy": h,
                "flat_same_rounds": f,
                "wan_bytes_ratio": round(h["wan_mb"] / f["wan_mb"], 4),
                "output": str(out),
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
