"""W3 — secure aggregation cost (shared BENCHMARKS.md).

For each cohort size n, vector length d, dropout pattern and mode (SecAgg+ with the
default k = O(log n), classic SecAgg with k = n - 1) this runs one real secure round of
fedge's protocol in one process (X25519, HKDF, AES-GCM shares, AES-CTR masks, Shamir) on
fixed-point encoded float32 updates, and the same round without secure aggregation
(FedAvg contributions summed in fedge's float64 Accumulator) as the reference.

Figures per run: median client compute seconds (fixed-point encoding + the four client
stages), server compute seconds (the four server stages + decoding), bytes sent per
client and the expansion over the plain float32 vector, whether the unmasked sum equals
the plain sum of the fixed-point inputs exactly, and the round ratio. The round ratio
is the critical path with clients running in parallel on their own devices:
(median client + server) secure over (median client + server) plain.

    .venv/bin/python benchmarks/w3_secagg.py            # full grid (minutes)
    .venv/bin/python benchmarks/w3_secagg.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from fedge.core.params import ParamSpec
from fedge.core.types import ClientUpdate
from fedge.engine.aggregator import Reducer, Validator
from fedge.pipeline import Pipeline, RoundContext
from fedge.secagg import fixedpoint
from fedge.secagg.graph import choose_parameters
from fedge.secagg.messages import RoundSetup
from fedge.secagg.orchestrator import run_protocol
from fedge.strategies import FedAvg
from fedge.strategies.aggregate import Accumulator

CLIP = 1.0
WEIGHT_CAP = 1000.0


def update_of(cid: int, d: int) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng([7, cid])
    return (rng.standard_normal(d, dtype=np.float32) * 0.05), int(rng.integers(10, 200))


class EncodedInputs(Mapping[int, np.ndarray]):
    """Each client's fixed-point input, produced when the client needs it (the encoding is
    timed as client work); the plain sum of the encodings is kept for the exactness check."""

    def __init__(self, cohort: tuple[int, ...], d: int, scale: float) -> None:
        self.cohort, self.d, self.scale = cohort, d, scale
        self.seconds: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self.expected = np.zeros(d + 1, dtype=np.uint32)

    def __getitem__(self, cid: int) -> np.ndarray:
        vec, w = update_of(cid, self.d)
        t0, c0 = time.perf_counter(), time.process_time()
        values = np.concatenate([vec.astype(np.float64) * (w / WEIGHT_CAP), [w / WEIGHT_CAP]])
        words = fixedpoint.encode(values, clip=CLIP, scale=self.scale, rng=np.random.default_rng(cid))
        self.seconds[cid] = time.perf_counter() - t0
        self.cpu[cid] = time.process_time() - c0
        self.expected += words
        return words

    def __iter__(self) -> Iterator[int]:
        return iter(self.cohort)

    def __len__(self) -> int:
        return len(self.cohort)

    def __contains__(self, cid: object) -> bool:
        return cid in self.cohort


def dropped(cohort: tuple[int, ...], rate: float) -> set[int]:
    return set(cohort[:: max(1, round(1 / rate))][: round(rate * len(cohort))]) if rate else set()


def secure_round(n: int, d: int, rate: float, stage: str, classic: bool) -> dict[str, Any]:
    cohort = tuple(range(n))
    p = choose_parameters(n, 0.1, k=n - 1 if classic else 0)
    setup = RoundSetup(1, cohort, p.k, p.t, d + 1, 32, graph_seed=11)
    scale = fixedpoint.max_scale(n, CLIP)
    inputs = EncodedInputs(cohort, d, scale)
    gone = dropped(cohort, rate)
    res = run_protocol(setup, inputs, drop={stage: gone} if gone else None)
    t0, c0 = time.perf_counter(), time.process_time()
    out = (fixedpoint.decode(res.total, scale=scale) * WEIGHT_CAP).astype(np.float32)
    server = res.server_seconds + time.perf_counter() - t0
    server_cpu = res.server_cpu_seconds + time.process_time() - c0
    clients = [res.client_seconds[c] + inputs.seconds.get(c, 0.0) for c in res.included]
    clients_cpu = [res.client_cpu_seconds[c] + inputs.cpu.get(c, 0.0) for c in res.included]
    sent = [res.client_bytes[c] for c in res.included]
    return {
        "k": p.k,
        "t": p.t,
        "included": len(res.included),
        "median_client_s": statistics.median(clients),
        "server_s": server,
        "median_client_cpu_s": statistics.median(clients_cpu),
        "server_cpu_s": server_cpu,
        "bytes_per_client": statistics.median(sent),
        "uplink_expansion": statistics.median(sent) / (4 * d),
        "exact": bool(np.array_equal(res.total, inputs.expected)),
        "aggregate_dtype": str(out.dtype),
    }


def plain_round(n: int, d: int, rate: float, stage: str) -> dict[str, float]:
    """The same round without secure aggregation: fedge's own per-update path (pipeline
    undo, validation, FedAvg contribution) into the float64 Accumulator."""
    strategy, acc = FedAvg(), Accumulator()
    spec = ParamSpec(((d,),))
    rctx = RoundContext(round_num=1, rng=np.random.default_rng(0), spec=spec, num_sampled=n)
    reducer = Reducer(strategy, Pipeline(), rctx, Validator(spec))
    gone = dropped(tuple(range(n)), rate) if stage != "unmask" else set()
    clients, server, server_cpu = [], 0.0, 0.0
    for cid in range(n):
        if cid in gone:
            continue
        vec, w = update_of(cid, d)
        t0 = time.perf_counter()
        wire = vec.tobytes()
        clients.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        upd = ClientUpdate(cid, [np.frombuffer(wire, dtype=np.float32)], w)
        acc.add(reducer(upd))
        server += time.perf_counter() - t0
        server_cpu += time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    strategy.mean_delta(acc.sums)
    server += time.perf_counter() - t0
    server_cpu += time.process_time() - c0
    return {"median_client_s": statistics.median(clients), "server_s": server, "server_cpu_s": server_cpu}


def grid(quick: bool) -> list[tuple[int, int, float, str, bool]]:
    if quick:
        return [(20, 10_000, 0.1, "masked_input", False), (20, 10_000, 0.1, "unmask", True)]
    runs = []
    for n, d in ((100, 10**5), (100, 10**6), (500, 10**5), (500, 10**6)):
        for rate, stage in ((0.0, "masked_input"), (0.1, "masked_input"), (0.1, "unmask")):
            runs.append((n, d, rate, stage, False))
            if n == 100 or (d == 10**5 and stage == "masked_input" and rate):
                runs.append((n, d, rate, stage, True))
    return runs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="two tiny rounds, for a smoke test")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    results = []
    for n, d, rate, stage, classic in grid(args.quick):
        sec = secure_round(n, d, rate, stage, classic)
        plain = plain_round(n, d, rate, stage)
        row = {
            "n": n,
            "d": d,
            "dropout": rate,
            "dropped_before": stage if rate else "none",
            "mode": "classic" if classic else "secagg+",
            **sec,
            "plain_median_client_s": plain["median_client_s"],
            "plain_server_s": plain["server_s"],
            "plain_server_cpu_s": plain["server_cpu_s"],
            "round_ratio": (sec["median_client_s"] + sec["server_s"]) / (plain["median_client_s"] + plain["server_s"]),
            "round_ratio_cpu": (sec["median_client_cpu_s"] + sec["server_cpu_s"])
            / (plain["median_client_s"] + plain["server_cpu_s"]),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    head = next(
        (
            r
            for r in results
            if (r["n"], r["d"], r["dropout"], r["dropped_before"], r["mode"])
            == (100, 10**6, 0.1, "masked_input", "secagg+")
        ),
        results[0],
    )
    summary = {
        "workload": "W3",
        "backend": "in-process (fedge.secagg.orchestrator, AES-256-CTR masks)",
        "quick": args.quick,
        "wall_s": time.perf_counter() - t_start,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "headline": {
            k: head[k]
            for k in (
                "n",
                "d",
                "dropout",
                "dropped_before",
                "mode",
                "k",
                "t",
                "median_client_s",
                "server_s",
                "round_ratio",
                "median_client_cpu_s",
                "server_cpu_s",
                "round_ratio_cpu",
                "uplink_expansion",
                "exact",
                "aggregate_dtype",
            )
        },
        "all_exact": all(r["exact"] for r in results),
        "runs": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
