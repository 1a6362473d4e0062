"""Hierarchical FL (HierFAVG) against flat FL on a fleet of vehicles with zonal ECUs, on the virtual clock.

Digits split over ``--vehicles`` x ``--zones`` clients (Dirichlet(0.5) label skew), every zone
of every vehicle training each round (NumPy MLP, FedAvg, 1 local epoch). Zones and gateways
are the catalog's ``zonal-ecu``; a zone talks to its gateway over 100 Mb/s in-vehicle
Ethernet, the gateway to the cloud over its cellular link (2 Mb/s up, 5 Mb/s down, 80 ms).
Three runs, measured in the same process:

* ``flat``: plain FedAvg, no hierarchy, to check ``kappa1 = 1`` against it
  (``flat_equivalence_max_abs_diff``: largest difference of the final weights);
* ``flat over the vehicle network``: ``[hierarchy] relay = "forward"`` -- the same FedAvg
  rounds (its weights are checked equal too), each zone's model and update crossing the
  cellular link: the reference for bytes, time and energy;
* ``hierarchy``: ``relay = "aggregate"`` with ``kappa1 = --kappa1`` edge steps per cloud round.

The last two stop at ``--target`` accuracy. Ratios are hierarchy / flat up to the round each
first reached the target: ``wan_bytes_ratio`` (cloud-link bytes), ``time_to_accuracy_ratio``
(simulated seconds), ``device_energy_ratio`` (joules of the zonal ECUs).

``"grpc"`` is a three-tier run on loopback (wall clock, not the virtual one): a ``fedge serve``
cloud in this process, ``--grpc-vehicles`` vehicle gateways as ``fedge relay`` processes
(``kappa1 = --kappa1``), and their ``--zones`` zonal ECUs as ``Node`` threads, for
``--grpc-rounds`` cloud rounds. Vehicle 0's relay is killed (SIGKILL) while the cloud's round
``--kill-round`` is training and restarted on its SQLite state at once; the line reports the
rounds completed, who was dropped, the final accuracy, and the largest difference of the final
weights from the simulated relays over the same clients (0 up to float32 rounding when the
restarted relay made it back into its round; ``--no-grpc`` skips the part).

    python benchmarks/hierarchy.py [--quick] [--vehicles 15] [--zones 4] [--kappa1 4] [--target 0.9] [--rounds 400]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import emit

from fedge.config.schema import Experiment
from fedge.engine import Callback, RunResult, StopRun
from fedge.federation import build, execute
from fedge.simulation.history import RoundRecord
from fedge.strategies.base import StrategyState


class StopAt(Callback):
    def __init__(self, target: float) -> None:
        self.target = target

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        if record.test_accuracy >= self.target:
            raise StopRun(f"reached {self.target}")


def experiment(args: argparse.Namespace, rounds: int, hierarchy: dict[str, Any] | None) -> Experiment:
    exp = Experiment()
    exp.seed = args.seed
    exp.rounds = rounds
    exp.data.num_clients = args.vehicles * args.zones
    exp.data.partition, exp.data.alpha = "dirichlet", 0.5
    exp.model.framework = "numpy"
    exp.training.backend = "sequential"
    exp.training.clients_per_round = args.vehicles * args.zones
    exp.training.local_epochs, exp.training.batch_size, exp.training.lr = 1, 16, 0.05
    if hierarchy is not None:
        h = exp.section("hierarchy")
        h.enabled, h.zones_per_vehicle = True, args.zones
        for k, v in hierarchy.items():
            setattr(h, k, v)
    return exp


def max_abs_diff(a: RunResult, b: RunResult) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a.state.params, b.state.params, strict=True))


def to_target(res: RunResult, target: float) -> dict[str, Any]:
    """What a run spent up to and including the first round at ``target`` (None when it never got there)."""
    hit = next((r.round for r in res.history if r.test_accuracy >= target), None)
    upto = [r for r in res.history if hit is not None and r.round <= hit]
    return {
        "rounds": hit,
        "accuracy": upto[-1].test_accuracy if upto else res.history.final_accuracy,
        "wan_bytes": sum(int(r.extra["wan_bytes"]) for r in upto) if upto else None,
        "lan_bytes": sum(int(r.extra["lan_bytes"]) for r in upto) if upto else None,
        "sim_s": float(upto[-1].extra["sim_clock_s"]) if upto else None,
        "device_energy_j": sum(float(r.extra["device_energy_j"]) for r in upto) if upto else None,
        "gateway_energy_j": sum(float(r.extra["gateway_energy_j"]) for r in upto) if upto else None,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 4)


def grpc_run(args: argparse.Namespace) -> dict[str, Any]:
    """The three-tier loopback run described in the module docstring."""
    from fedge.config import from_dict
    from fedge.config.schema import to_toml
    from fedge.deploy.auth import Signer, load_private, new_keys
    from fedge.deploy.node import Backoff, Node
    from fedge.deploy.server import serve

    v, z = args.grpc_vehicles, args.zones
    sim_args = argparse.Namespace(**{**vars(args), "vehicles": v})
    sim = execute(build(experiment(sim_args, args.grpc_rounds, {"kappa1": args.kappa1})))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        relays = [new_keys(tmp / "keys", f"vehicle{i}")[0] for i in range(v)]
        zones = [new_keys(tmp / "keys", f"zone{c}")[0] for c in range(v * z)]
        line = lambda key, mark="": key.with_suffix(".pub").read_text().strip() + f" {mark}\n"  # noqa: E731
        (tmp / "cloud.txt").write_text("".join(line(k, f"relay={z}") for k in relays))
        exp = experiment(sim_args, args.grpc_rounds, None)
        deploy = {
            "port": 0,
            "state": str(tmp / "cloud.db"),
            "min_nodes": v * z,
            "round_min_nodes": v * z,
            "heartbeat_s": 0.2,
            "node_timeout_s": 15.0,
            "wait_s": 120.0,
            "round_deadline_s": 120.0,
            "allow_list": str(tmp / "cloud.txt"),
            "insecure": True,
            "examples_cap": 0.0,
            "norm_cap": 0.0,
        }
        import tomllib

        exp = from_dict({**tomllib.loads(to_toml(exp, commented=False)), "deploy": deploy})
        ready, out, svc_of = threading.Event(), {}, {}
        ports: list[int] = []

        def cloud() -> None:
            out["served"] = serve(
                exp,
                on_ready=lambda p: (ports.append(p), ready.set()),
                transport_hook=lambda t: svc_of.update(svc=t.service),
                linger_s=1.0,
            )

        t_cloud = threading.Thread(target=cloud, daemon=True)
        t_cloud.start()
        assert ready.wait(60), "the cloud did not start"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        relay_ports = [free for free in (_free_port() for _ in range(v))]

        def relay_cmd(i: int) -> list[str]:
            allow = tmp / f"vehicle{i}.txt"
            allow.write_text("".join(line(zones[i * z + j]) for j in range(z)))
            return [
                *(sys.executable, "-m", "fedge.cli.main", "relay"),
                *("--parent", f"127.0.0.1:{ports[0]}", "--key", str(relays[i]), "--partition", str(i * z)),
                *("--kappa1", str(args.kappa1), "--insecure", "--serve-insecure", "--port", str(relay_ports[i])),
                *("--state", str(tmp / f"vehicle{i}.db"), "--allow", str(allow), "--give-up", "120", "-q"),
                *("--set", "deploy.heartbeat_s=0.2", "--set", "deploy.examples_cap=0", "--set", "deploy.norm_cap=0"),
            ]

        logs = [open(tmp / f"vehicle{i}.log", "ab") for i in range(v)]  # noqa: SIM115 (closed below)
        procs = [subprocess.Popen(relay_cmd(i), env=env, stdout=logs[i], stderr=logs[i]) for i in range(v)]
        nodes = [
            Node(
                f"127.0.0.1:{relay_ports[c // z]}",
                Signer(load_private(zones[c])),
                partition=c,
                backoff=Backoff(give_up_s=120),
                insecure=True,
            )
            for c in range(v * z)
        ]
        for n in nodes:
            threading.Thread(target=n.run, daemon=True).start()
        killed_at = None
        t0 = time.perf_counter()
        try:
            while t_cloud.is_alive() and killed_at is None:
                svc = svc_of.get("svc")
                if svc is not None and svc.round_num == args.kill_round and svc.phase == "training":
                    time.sleep(0.05)
                    procs[0].send_signal(signal.SIGKILL)
                    procs[0].wait(10)
                    killed_at = time.perf_counter() - t0
                    procs[0] = subprocess.Popen(relay_cmd(0), env=env, stdout=logs[0], stderr=logs[0])
                time.sleep(0.01)
            t_cloud.join(args.grpc_rounds * 60)
        finally:
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            for n in nodes:
                n.stop()
            for f in logs:
                f.close()
        served = out.get("served")
        wall = time.perf_counter() - t0
        if served is None:
            return {"error": "the cloud did not finish", "killed_at_s": killed_at}
        h = served.history
        return {
            "workload": f"digits Dirichlet(0.5), {v} vehicles x {z} zonal ECUs, NumPy MLP, FedAvg, "
            f"kappa1 {args.kappa1}",
            "tiers": "Node threads -> fedge relay processes -> fedge serve (this process), loopback plaintext",
            "rounds_completed": len(h),
            "rounds_planned": args.grpc_rounds,
            "participants": [r.participants for r in h],
            "dropped_by_round": {r.round: r.dropped for r in h if r.dropped},
            "killed_relay": 0,
            "kill_round": args.kill_round,
            "killed_at_s": None if killed_at is None else round(killed_at, 2),
            "relay_exit_codes": [p.returncode for p in procs],
            "final_accuracy": h.final_accuracy,
            "simulated_final_accuracy": sim.history.final_accuracy,
            "vs_simulation_max_abs_diff": max_abs_diff(served.result, sim),
            "wall_s": round(wall, 2),
        }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 vehicles, target 0.8, 3 equivalence rounds")
    ap.add_argument("--vehicles", type=int, default=15)
    ap.add_argument("--zones", type=int, default=4, help="zonal ECUs (clients) per vehicle")
    ap.add_argument("--kappa1", type=int, default=4, help="edge aggregation steps per cloud round")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--rounds", type=int, default=400, help="most cloud rounds each run may take")
    ap.add_argument("--equivalence-rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grpc-vehicles", type=int, default=3, help="vehicle relays (processes) of the gRPC run")
    ap.add_argument("--grpc-rounds", type=int, default=8, help="cloud rounds of the gRPC run")
    ap.add_argument("--kill-round", type=int, default=3, help="cloud round during which vehicle 0's relay is killed")
    ap.add_argument("--no-grpc", action="store_true", help="skip the gRPC run")
    args = ap.parse_args()
    if args.quick:
        args.vehicles, args.target, args.equivalence_rounds = 8, 0.8, 3
        args.grpc_vehicles, args.grpc_rounds, args.kill_round = 2, 4, 2
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    flat = execute(build(experiment(args, args.equivalence_rounds, None)))
    tree1 = execute(build(experiment(args, args.equivalence_rounds, {"kappa1": 1})))
    forward_eq = execute(build(experiment(args, args.equivalence_rounds, {"relay": "forward", "kappa1": 1})))
    print(f"equivalence runs: {time.perf_counter() - t0:.1f}s", flush=True)

    runs: dict[str, dict[str, Any]] = {}
    for name, h in (("flat", {"relay": "forward", "kappa1": 1}), ("hierarchy", {"kappa1": args.kappa1})):
        t0 = time.perf_counter()
        res = execute(build(experiment(args, args.rounds, h)), [StopAt(args.target)])
        runs[name] = to_target(res, args.target)
        print(f"{name}: {runs[name]} wall={time.perf_counter() - t0:.1f}s", flush=True)
    f, h = runs["flat"], runs["hierarchy"]
    grpc = None
    if not args.no_grpc:
        t0 = time.perf_counter()
        grpc = grpc_run(args)
        print(f"grpc: wall={time.perf_counter() - t0:.1f}s", flush=True)
    emit(
        {
            "workload": f"digits Dirichlet(0.5), {args.vehicles} vehicles x {args.zones} zonal ECUs, NumPy MLP, FedAvg",
            "backend": "numpy, sequential (the relays run in process)",
            "kappa1": args.kappa1,
            "target": args.target,
            "flat_equivalence_max_abs_diff": max_abs_diff(flat, tree1),
            "forward_equivalence_max_abs_diff": max_abs_diff(flat, forward_eq),
            "equivalence_rounds": args.equivalence_rounds,
            "wan_bytes_ratio": ratio(h["wan_bytes"], f["wan_bytes"]),
            "time_to_accuracy_ratio": ratio(h["sim_s"], f["sim_s"]),
            "device_energy_ratio": ratio(h["device_energy_j"], f["device_energy_j"]),
            "gateway_energy_ratio": ratio(h["gateway_energy_j"], f["gateway_energy_j"]),
            "lan_bytes_ratio": ratio(h["lan_bytes"], f["lan_bytes"]),
            "flat": f,
            "hierarchy": h,
            "grpc": grpc,
            "wall_s": round(time.perf_counter() - t_all, 2),
        }
    )


if __name__ == "__main__":
    main()
