"""Generate a synthetic fleet of cars whose driver-monitoring telemetry is key -> value records.

Each car writes one JSON-lines file of 10-second windows::

    {"client_id": "car-007", "label": "drowsy",
     "features": {"cabin.dms.eyelid.perclos": 0.31, "chassis.steering.reversal_rate": 0.6, ...}}

Labels are the driver's state: ``alert``, ``drowsy`` or ``distracted``. What makes the
keys sensitive, and why fedge hashes them on the car: the channel names reveal the
vehicle's sensor kit and OEM platform, and some are location markers
(``route.zone.<geohash>``) that say where the car goes.

The fleet is heterogeneous on purpose: cars have different sensor kits (older ones have
no driver camera or no cabin radar), each driver has a personal baseline, each car sees
its own mix of states (Dirichlet label skew), and about 1% of records are broken (a
sensor reports ``"ERR"``, a label is missing) — the loader skips and counts them.

Run: ``python examples/driver_state/generate.py --out examples/driver_state/data``.
"""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path

import numpy as np

STATES = ("alert", "drowsy", "distracted")

# channel -> (mean if alert, drowsy, distracted), spread
CHANNELS: dict[str, tuple[tuple[float, float, float], float]] = {
    "cabin.dms.eyelid.perclos": ((0.08, 0.30, 0.10), 0.07),
    "cabin.dms.blink.duration_s": ((0.15, 0.28, 0.16), 0.05),
    "cabin.dms.head_pose.pitch_drop": ((0.10, 0.50, 0.20), 0.20),
    "cabin.dms.head_pose.yaw_std": ((0.30, 0.35, 0.90), 0.25),
    "cabin.dms.gaze.offroad_ratio": ((0.10, 0.20, 0.50), 0.12),
    "chassis.steering.reversal_rate": ((1.00, 0.60, 1.30), 0.30),
    "chassis.steering.correction_gap_s": ((0.50, 1.30, 0.80), 0.35),
    "chassis.lane.lateral_std_m": ((0.18, 0.30, 0.33), 0.07),
    "chassis.pedal.throttle_var": ((0.40, 0.25, 0.55), 0.15),
    "cabin.radar.respiration.rate_hz": ((0.28, 0.22, 0.30), 0.03),
    "cabin.radar.respiration.var": ((0.50, 0.30, 0.75), 0.20),
    "hmi.infotainment.touch_rate": ((0.10, 0.05, 0.80), 0.25),
    "hmi.phone.handsfree_active": ((0.10, 0.10, 0.55), 0.30),
}
KITS = {
    "full": [c for c in CHANNELS],
    "camera-only": [c for c in CHANNELS if not c.startswith("cabin.radar")],
    "legacy": [c for c in CHANNELS if c.startswith(("chassis.", "hmi."))],
}
KIT_SHARES = {"full": 0.4, "camera-only": 0.4, "legacy": 0.2}
PLATFORMS = ("s32g-zonal", "orin-cockpit")


def make_car(k: int, rng: np.random.Generator, mean_records: int, skew: float) -> list[dict[str, object]]:
    car = f"car-{k:03d}"
    kit = str(rng.choice(list(KIT_SHARES), p=list(KIT_SHARES.values())))
    channels = KITS[kit]
    baseline = {c: rng.normal(0.0, 0.35 * CHANNELS[c][1]) for c in channels}
    platform = PLATFORMS[k % len(PLATFORMS)]
    oem = [f"oem.{platform}.ecu{rng.integers(16**5):05x}.aux{j}" for j in range(3)]
    zones = [f"route.zone.u{rng.integers(36**5):07x}" for _ in range(4)]
    mix = rng.dirichlet([skew] * len(STATES))
    n = max(20, int(rng.lognormal(np.log(mean_records), 0.4)))
    rows: list[dict[str, object]] = []
    for _ in range(n):
        s = int(rng.choice(len(STATES), p=mix))
        feats: dict[str, object] = {}
        for c in channels:
            means, spread = CHANNELS[c]
            feats[c] = round(float(means[s] + baseline[c] + rng.normal(0.0, spread)), 4)
        for c in oem:
            feats[c] = round(float(rng.normal(0.0, 0.3)), 4)
        feats[str(rng.choice(zones))] = 1.0
        row: dict[str, object] = {"client_id": car, "label": STATES[s], "features": feats}
        if rng.random() < 0.005:
            feats[channels[0]] = "ERR"
        elif rng.random() < 0.005:
            del row["label"]
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    ap.add_argument("--cars", type=int, default=60)
    ap.add_argument("--records", type=int, default=150, help="typical 10-second windows per car")
    ap.add_argument("--skew", type=float, default=1.0, help="Dirichlet α of each car's state mix")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("car-*.jsonl"):
        old.unlink()
    total = 0
    for k in range(args.cars):
        rows = make_car(k, rng, args.records, args.skew)
        path = args.out / f"car-{k:03d}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        total += len(rows)
    secret = args.out / "fleet.secret"
    if not secret.exists():
        secret.write_text(secrets.token_hex(32) + "\n")
        secret.chmod(0o600)
    print(f"wrote {total} records from {args.cars} cars to {args.out} (fleet secret: {secret})")


if __name__ == "__main__":
    main()
