"""Raggedness sweep: the vectorized backend against sequential as client sizes spread out.

For each sigma, a federation whose client sizes follow lognormal(4, sigma) (clipped to
[5, 5000] samples) trains the same MLP with the same seeds on both backends, in this
process, one after the other (twice, in the order A B B A). Prints one JSON line with the median seconds per round of
each and ``ratio_vectorized_to_sequential`` per sigma (the target is <= 1.0 at every
sigma), the vectorized backend's wasted-step fraction, and whether both backends ended
with the same weights (to 1e-5).

    python benchmarks/ragged.py                 # sigma 0, 1, 2; 20 clients per round
    python benchmarks/ragged.py --quick         # 2 rounds each, 10 clients per round
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch
from _common import emit
from torch import nn

from fedge.clients.base import ClientData, LearnerClient
from fedge.clients.torch_learner import TorchLearner
from fedge.core.types import TrainConfig
from fedge.engine import Callback, run
from fedge.simulation.backends import VectorizedBackend
from fedge.simulation.history import RoundRecord
from fedge.simulation.sampling import Sampling
from fedge.strategies.base import StrategyState
from fedge.strategies.fedavg import FedAvg
from fedge.transport.inprocess import BACKENDS, Backend, InProcessTransport

FEATURES, CLASSES = 60, 10


def federation(sigma: float, num_clients: int, seed: int) -> list[ClientData]:
    """Clients whose sizes follow lognormal(4, sigma), each with its own random linear labelling."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(np.round(rng.lognormal(4.0, sigma, size=num_clients)), 5, 5000).astype(int)
    w = rng.normal(size=(FEATURES, CLASSES)).astype(np.float32)
    out = []
    for n in sizes:
        x = rng.normal(size=(int(n), FEATURES)).astype(np.float32)
        out.append(ClientData(x, np.argmax(x @ w, axis=1).astype(np.int64)))
    return out


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, CLASSES))


class _Times(Callback):
    def __init__(self) -> None:
        self.wall: list[float] = []

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        self.wall.append(record.wall_s)


def time_backend(
    backend: Backend, clients: list[ClientData], rounds: int, per_round: int, seed: int
) -> tuple[float, list[np.ndarray]]:
    """Median seconds per round after a warm-up round, and the final weights."""
    torch.manual_seed(seed)
    learner = TorchLearner(_mlp)
    strategy = FedAvg()
    transport = InProcessTransport(
        lambda cid: LearnerClient(cid, learner, clients[cid]),
        len(clients),
        strategy=strategy,
        seed=seed,
        backend=backend,
    )
    times = _Times()
    try:
        result = run(
            strategy=strategy,
            transport=transport,
            initial_params=learner.init_params(seed),
            rounds=rounds + 1,
            sampling=Sampling(count=per_round),
            train=TrainConfig(epochs=2, batch_size=10, lr=0.05),
            seed=seed,
            callbacks=[times],
        )
    finally:
        transport.close()
    return statistics.median(times.wall[1:]), result.state.params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="timed rounds per backend (after one warm-up round)")
    ap.add_argument("--clients", type=int, default=40, help="clients in the federation")
    ap.add_argument("--per-round", type=int, default=20, help="clients per round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 10 clients per round")
    ap.add_argument(
        "--unbucketed",
        action="store_true",
        help="also time one lock-step bucket per cohort (the padding before buckets)",
    )
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.per_round = 2, 10
    torch.set_num_threads(args.threads)
    ratios: dict[str, float] = {}
    detail: dict[str, Any] = {}
    before: dict[str, float] = {}
    for sigma in (0.0, 1.0, 2.0):
        clients = federation(sigma, args.clients, args.seed)
        t0 = time.perf_counter()
        # Timed twice, in the order A B B A, keeping each backend's faster median: on a shared
        # machine the load drifts, and this way neither backend always runs first.
        seq_s, seq_w = time_backend(BACKENDS["sequential"](), clients, args.rounds, args.per_round, args.seed)
        vec = VectorizedBackend()
        vec_s, vec_w = time_backend(vec, clients, args.rounds, args.per_round, args.seed)
        vec_s = min(vec_s, time_backend(VectorizedBackend(), clients, args.rounds, args.per_round, args.seed)[0])
        seq_s = min(seq_s, time_backend(BACKENDS["sequential"](), clients, args.rounds, args.per_round, args.seed)[0])
        same = all(np.allclose(a, b, atol=1e-5, rtol=0) for a, b in zip(seq_w, vec_w, strict=True))
        key = f"{sigma:g}"
        ratios[key] = round(vec_s / seq_s, 3)
        if args.unbucketed:
            one = VectorizedBackend(max_waste=1.0, min_batch=1)
            one_s, _ = time_backend(one, clients, args.rounds, args.per_round, args.seed)
            before[key] = round(one_s / seq_s, 3)
        sizes = [c.num_train for c in clients]
        detail[key] = {
            "sizes_min_median_max": [min(sizes), int(np.median(sizes)), max(sizes)],
            "sequential_s_per_round": round(seq_s, 4),
            "vectorized_s_per_round": round(vec_s, 4),
            "wasted_step_fraction_last_round": round(vec.round_info["wasted_step_fraction"], 3),
            "batched_clients_last_round": vec.round_info["batched_clients"],
            "weights_match": same,
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    emit(
        {
            "benchmark": "ragged",
            "clients": args.clients,
            "per_round": args.per_round,
            "rounds": args.rounds,
            "ratio_vectorized_to_sequential": ratios,
            "max_ratio": max(ratios.values()),
            **({"ratio_unbucketed_to_sequential": before} if before else {}),
            "sigmas": detail,
        }
    )


if __name__ == "__main__":
    main()
