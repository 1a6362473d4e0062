"""W4 — a networked round on loopback (BENCHMARKS.md).

A real server process (the round loop over :class:`fedge.deploy.transport.GrpcTransport`)
and C nodes in client processes on 127.0.0.1 (several nodes share a process, in threads,
for the larger C); a model of P float32 parameters; every node trains a trivial step.
Figures per configuration: seconds per round, server peak RSS, bytes on the wire per
client per round, and ``vs_inprocess``: seconds per round over the same round run by the
in-process simulation transport in this run (the price of the network path).

    python benchmarks/w4_network.py            # C=100 and 500 at 10^6, C=10 at 10^7
    python benchmarks/w4_network.py --quick    # C=10 at 10^5, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

TOML = 'seed = 0\nrounds = 1\n[model]\nname = "logreg"\nframework = "numpy"\n'
PER_PROCESS = 50


class Trivial:
    """A client whose training is one trivial step: add a small constant."""

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
    return [np.zeros(p - 1000, np.float32), np.zeros(1000, np.float32)]


def role_server(a: argparse.Namespace) -> None:
    from fedge.deploy.auth import Verifier
    from fedge.deploy.config import DeployConfig
    from fedge.deploy.server import start_grpc
    from fedge.deploy.service import FedgeService
    from fedge.deploy.store import Store
    from fedge.deploy.transport import GrpcTransport
    from fedge.engine import Callback, run
    from fedge.simulation.sampling import Sampling
    from fedge.strategies.fedavg import FedAvg

    store = Store(a.state)
    svc = FedgeService(
        store=store,
        verifier=Verifier(Path(a.allow)),
        run_id="w4",
        config_toml=TOML,
        num_clients=a.clients,
        rounds=a.rounds,
        min_nodes=a.clients,
        heartbeat_s=4.0,
        node_timeout_s=60.0,
    )
    transport = GrpcTransport(svc, wait_s=600, round_deadline_s=600)
    server, _ = start_grpc(svc, DeployConfig(port=a.port, workers=64, max_decoding=4, insecure=True))

    class Save(Callback):
        def on_round_end(self, record: Any, state: Any) -> None:
            store.checkpoint(record, state)

    result = run(
        strategy=FedAvg(),
        transport=transport,
        initial_params=model(a.params),
        rounds=a.rounds,
        sampling=Sampling(count=None, fraction=1.0),
        callbacks=[Save()],
    )
    svc.finished = True
    time.sleep(6.0)
    server.stop(1).wait()
    recs = result.history.rounds
    print(
        json.dumps(
            {
                "round_s": [r.wall_s for r in recs],
                "participants": [r.participants for r in recs],
                "uplink_per_client": recs[-1].uplink_bytes / max(1, recs[-1].participants),
                "downlink_per_client": recs[-1].downlink_bytes / max(1, recs[-1].participants),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "final_mean": float(np.mean(result.state.params[0])),
            }
        ),
        flush=True,
    )


def role_nodes(a: argparse.Namespace) -> None:
    from fedge.deploy.auth import Signer, load_private
    from fedge.deploy.node import Backoff, Node

    sem = threading.Semaphore(1)

    class GroupNode(Node):
        def train(self, reply: Any) -> None:
            with sem:
                super().train(reply)

    lo, hi = map(int, a.ids.split("-"))
    threads = []
    for cid in range(lo, hi):
        node = GroupNode(
            f"127.0.0.1:{a.port}",
            Signer(load_private(Path(a.keys) / f"n{cid}.key")),
            partition=cid,
            client_factory=lambda exp, cid: Trivial(cid),
            backoff=Backoff(give_up_s=120),
            state_dir=Path(a.keys),
            insecure=True,
        )
        t = threading.Thread(target=node.run, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


def inprocess_round_s(clients: int, params: int, rounds: int) -> float:
    from fedge.engine import run
    from fedge.simulation.sampling import Sampling
    from fedge.strategies.fedavg import FedAvg
    from fedge.transport.inprocess import InProcessTransport, SequentialBackend

    t = InProcessTransport(Trivial, clients, strategy=FedAvg(), backend=SequentialBackend())
    result = run(
        strategy=FedAvg(),
        transport=t,
        initial_params=model(params),
        rounds=rounds,
        sampling=Sampling(count=None, fraction=1.0),
    )
    return float(np.mean([r.wall_s for r in result.history.rounds]))


def one(clients: int, params: int, rounds: int, work: Path) -> dict[str, Any]:
    from fedge.deploy.auth import new_keys

    keys = work / f"keys{clients}"
    for i in range(clients):
        new_keys(keys, f"n{i}")
    allow = work / f"allow{clients}.txt"
    allow.write_text("".join((keys / f"n{i}.pub").read_text() for i in range(clients)))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    me = [sys.executable, __file__]
    common = ["--port", str(port), "--clients", str(clients), "--params", str(params), "--rounds", str(rounds)]
    t0 = time.perf_counter()
    server = subprocess.Popen(
        [*me, "--role", "server", *common, "--allow", str(allow), "--state", str(work / f"w4-{clients}-{params}.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    groups = [
        subprocess.Popen(
            [*me, "--role", "nodes", *common, "--keys", str(keys), "--ids", f"{lo}-{min(clients, lo + PER_PROCESS)}"],
            stderr=subprocess.DEVNULL,
        )
        for lo in range(0, clients, PER_PROCESS)
    ]
    out, _ = server.communicate(timeout=1800)
    for g in groups:
        try:
            g.wait(30)
        except subprocess.TimeoutExpired:
            g.kill()
            g.wait()
    if server.returncode != 0:
        raise SystemExit(f"server failed with code {server.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    ref = inprocess_round_s(clients, params, rounds)
    round_s = float(np.mean(res["round_s"][1:] or res["round_s"]))
    return {
        "clients": clients,
        "params": params,
        "rounds": rounds,
        "s_per_round": round_s,
        "first_round_s": res["round_s"][0],
        "inprocess_s_per_round": ref,
        "vs_inprocess": round_s / ref,
        "server_peak_rss_mib": res["peak_rss_mib"],
        "wire_bytes_per_client_round": res["uplink_per_client"] + res["downlink_per_client"],
        "model_bytes": params * 4,
        "participants": res["participants"],
        "wall_s": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--role", choices=["main", "server", "nodes"], default="main")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--params", type=int, default=10**6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--allow", default="")
    ap.add_argument("--state", default="")
    ap.add_argument("--keys", default="")
    ap.add_argument("--ids", default="0-0")
    a = ap.parse_args()
    if a.role == "server":
        return role_server(a)
    if a.role == "nodes":
        return role_nodes(a)
    t0 = time.perf_counter()
    configs = [(10, 10**5, 2)] if a.quick else [(100, 10**6, 3), (500, 10**6, 3), (10, 10**7, 3)]
    with tempfile.TemporaryDirectory() as d:
        runs = [one(c, p, r, Path(d)) for c, p, r in configs]
    for r in runs:
        print(json.dumps(r))
    by = {(r["clients"], r["params"]): r for r in runs}
    summary: dict[str, Any] = {
        "workload": "W4",
        "backend": "grpc-loopback",
        "quick": a.quick,
        "wall_s": time.perf_counter() - t0,
        "peak_rss_mib": max(r["server_peak_rss_mib"] for r in runs),
        "runs": runs,
    }
    if (100, 10**6) in by and (500, 10**6) in by:
        summary["server_rss_500_over_100"] = (
            by[(500, 10**6)]["server_peak_rss_mib"] / by[(100, 10**6)]["server_peak_rss_mib"]
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
