"""W4 — a networked round on loopback (BENCHMARKS.md).

A real server process (the round loop over :class:`fedge.deploy.transport.GrpcTransport`
on the event-driven gRPC server) and N real nodes from the load generator
(:mod:`fedge.deploy.loadgen`: each node its own key, its own channel and signed calls,
thousands per process on asyncio); a model of P float32 parameters; every node replays a
trivial step. Figures per configuration: seconds per round (steady, and the first round),
server peak RSS, failed nodes, bytes on the wire per node per round, and
``inprocess_s_per_round``: the same round run by the in-process simulation transport in this
run (the price of the network path).

    python benchmarks/w4_network.py --nodes 10000 --params 10000
    python benchmarks/w4_network.py            # 100, 1,000 and 10,000 nodes at 10^4; 500 at 10^6
    python benchmarks/w4_network.py --quick    # 100 nodes at 10^4, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TOML = 'seed = 0\nrounds = 1\n[model]\nname = "logreg"\nframework = "numpy"\n'


class Trivial:
    """The in-process reference's client: one trivial step, the same the load generator replays."""

    def __init__(self, cid: int) -> None:
        self.client_id = cid

    def train(self, params: Any, cfg: Any, ctx: Any) -> Any:
        from fedge.clients.base import TrainResult

        return TrainResult([p + np.float32(1e-3) for p in params], steps=1, loss=0.0, num_examples=1)

    def loss(self, params: Any) -> float:
        return 0.0

    def evaluate(self, params: Any) -> Any:
        raise NotImplementedError


def model(p: int) -> list[np.ndarray]:
    return [np.zeros(p - min(p // 2, 1000), np.float32), np.zeros(min(p // 2, 1000), np.float32)]


def role_server(a: argparse.Namespace) -> None:
    from fedge.deploy.auth import Verifier
    from fedge.deploy.config import DeployConfig
    from fedge.deploy.server import start_grpc
    from fedge.deploy.service import FedgeService
    from fedge.deploy.store import Store
    from fedge.deploy.transport import GrpcTransport
    from fedge.engine import run
    from fedge.simulation.sampling import Sampling
    from fedge.strategies.fedavg import FedAvg

    store = Store(a.state)
    svc = FedgeService(
        store=store,
        verifier=Verifier(Path(a.allow)),
        run_id="w4",
        config_toml=TOML,
        num_clients=a.nodes,
        rounds=a.rounds,
        min_nodes=a.nodes,
        heartbeat_s=10.0,
        node_timeout_s=60.0,
        max_inflight_bytes=int(a.inflight_mib * 2**20),
        max_update_bytes=min(2**31, int(a.inflight_mib * 2**20)),
    )
    transport = GrpcTransport(svc, wait_s=900, round_deadline_s=600, round_min_nodes=a.nodes)
    cfg = DeployConfig(port=a.port, insecure=True, node_timeout_s=60.0, heartbeat_s=10.0)
    server, _ = start_grpc(svc, cfg)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"listening": True}), flush=True)
    result = run(
        strategy=FedAvg(),
        transport=transport,
        initial_params=model(a.params),
        rounds=a.rounds,
        sampling=Sampling(count=None, fraction=1.0),
    )
    transport.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and svc.streaming():
        time.sleep(0.1)
    server.stop(1).wait()
    recs = result.history.rounds
    print(
        json.dumps(
            {
                "round_s": [r.wall_s for r in recs],
                "participants": [r.participants for r in recs],
                "failed": [r.failed for r in recs],
                "uplink_per_node": recs[-1].uplink_bytes / max(1, recs[-1].participants),
                "downlink_per_node": recs[-1].downlink_bytes / max(1, recs[-1].participants),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_before_nodes_mib": rss_before,
                "final_mean": float(np.mean(result.state.params[0])),
            }
        ),
        flush=True,
    )


def inprocess_round_s(nodes: int, params: int, rounds: int) -> float:
    from fedge.engine import run
    from fedge.simulation.sampling import Sampling
    from fedge.strategies.fedavg import FedAvg
    from fedge.transport.inprocess import InProcessTransport, SequentialBackend

    t = InProcessTransport(Trivial, nodes, strategy=FedAvg(), backend=SequentialBackend())
    result = run(
        strategy=FedAvg(),
        transport=t,
        initial_params=model(params),
        rounds=rounds,
        sampling=Sampling(count=None, fraction=1.0),
    )
    return float(np.median([r.wall_s for r in result.history.rounds]))


def one(nodes: int, params: int, rounds: int, processes: int, work: Path, inflight_mib: float) -> dict[str, Any]:
    from fedge.deploy.loadgen import run_fleet, write_allow_list

    allow = write_allow_list(work / f"allow{nodes}.txt", nodes)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            "server",
            *("--port", str(port), "--nodes", str(nodes), "--params", str(params), "--rounds", str(rounds)),
            *("--allow", str(allow), "--state", str(work / f"w4-{nodes}-{params}.db")),
            *("--inflight-mib", str(inflight_mib)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    server.stdout.readline()  # listening
    fleet = run_fleet(f"127.0.0.1:{port}", nodes, processes=processes, timeout_s=1800)
    out, _ = server.communicate(timeout=600)
    if server.returncode != 0:
        raise SystemExit(f"server failed with code {server.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    ref = inprocess_round_s(min(nodes, 1000), params, 2) * nodes / min(nodes, 1000)
    steady = res["round_s"][1:] or res["round_s"]
    return {
        "workload": "W4",
        "nodes": nodes,
        "params": params,
        "rounds": rounds,
        "max_inflight_mib": inflight_mib,
        "s_per_round": float(np.median(steady)),
        "first_round_s": res["round_s"][0],
        "server_peak_rss_mib": res["peak_rss_mib"],
        "server_rss_before_nodes_mib": res["rss_before_nodes_mib"],
        "failed": int(sum(res["failed"])),
        "participants": res["participants"],
        "bytes_per_node_round": res["uplink_per_node"] + res["downlink_per_node"],
        "model_bytes": params * 4,
        "inprocess_s_per_round": ref,
        "vs_inprocess": float(np.median(steady)) / ref,
        "loadgen": {k: v for k, v in fleet.__dict__.items() if k != "reasons"} | {"reasons": fleet.reasons},
        "wall_s": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--role", choices=["main", "server"], default="main")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--nodes", type=int, default=0)
    ap.add_argument("--params", type=int, default=10**4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--processes", type=int, default=3, help="load-generator processes")
    ap.add_argument(
        "--inflight-mib", type=float, default=4096.0, help="the server's deploy.max_inflight_mib (bytes in flight)"
    )
    ap.add_argument("--allow", default="")
    ap.add_argument("--state", default="")
    a = ap.parse_args()
    if a.role == "server":
        return role_server(a)
    t0 = time.perf_counter()
    if a.nodes:
        configs = [(a.nodes, a.params)]
    elif a.quick:
        configs = [(100, 10**4)]
    else:
        configs = [(100, 10**4), (1000, 10**4), (10000, 10**4), (500, 10**6)]
    with tempfile.TemporaryDirectory() as d:
        runs = [one(n, p, a.rounds, a.processes, Path(d), a.inflight_mib) for n, p in configs]
    for r in runs:
        print(json.dumps(r))
    if len(runs) > 1:
        print(
            json.dumps(
                {
                    "workload": "W4",
                    "wall_s": time.perf_counter() - t0,
                    "s_per_round": {f"{r['nodes']}x{r['params']}": r["s_per_round"] for r in runs},
                    "server_peak_rss_mib": {f"{r['nodes']}x{r['params']}": r["server_peak_rss_mib"] for r in runs},
                    "failed": sum(r["failed"] for r in runs),
                }
            )
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
