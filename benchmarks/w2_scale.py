"""W2 (BENCHMARKS.md): many small clients; fedge's backend against a plain PyTorch loop.

Both run the same rounds in this process: the same sampled clients (the round's
generator), the same mini-batches (each client's generator), SGD with the same
learning rate, and a sample-weighted average. The script checks that both end with the
same global weights (to 1e-5) and prints one JSON line.

    python benchmarks/w2_scale.py --size b --model mlp --backend vectorized
    python benchmarks/w2_scale.py --quick

fedge trains the built-in model (``fedge.models.build_learner``: the torch module, trained
through its NumPy dense kernel); ``--module-only`` trains the same module with torch alone,
as fedge did before the kernel.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _common import plain_fedavg
from torch import nn

import fedge.simulation.backends  # noqa: F401  (registers the backends)
from fedge.clients.base import LearnerClient
from fedge.clients.torch_learner import TorchLearner, get_params
from fedge.core.types import TrainConfig
from fedge.data.federated import FederatedDataset
from fedge.data.w2 import w2
from fedge.engine import Callback, run
from fedge.federation import make_backend
from fedge.models import build_learner
from fedge.simulation.history import RoundRecord
from fedge.simulation.sampling import Sampling
from fedge.strategies.base import StrategyState
from fedge.strategies.fedavg import FedAvg
from fedge.transport.inprocess import InProcessTransport

SIZES = {"a": (1_000, 100, 5), "b": (10_000, 1_000, 5), "c": (100_000, 10_000, 3)}
QUICK = (400, 40, 3)
CFG = TrainConfig(epochs=1, batch_size=10, lr=0.05)
SEED = 0


def make_module(model: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        if model == "logreg":
            return nn.Linear(60, 10)
        return nn.Sequential(nn.Linear(60, 64), nn.ReLU(), nn.Linear(64, 10))

    return build


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plain_loop(
    data: FederatedDataset,
    module: nn.Module,
    initial: list[np.ndarray],
    rounds: int,
    per_round: int,
    cfg: TrainConfig = CFG,
    seed: int = SEED,
) -> tuple[list[np.ndarray], list[float]]:
    """The reference: one reused module, torch.optim.SGD, slicing, a weighted average."""
    return plain_fedavg(data, module, initial, rounds, Sampling(count=per_round), cfg, seed)


class _Timer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        self.times.append(record.wall_s)


def fedge_run(
    data: FederatedDataset,
    learner: TorchLearner,
    initial: list[np.ndarray],
    rounds: int,
    per_round: int,
    backend: Any,
    cfg: TrainConfig = CFG,
    seed: int = SEED,
) -> tuple[list[np.ndarray], list[float]]:
    """Run fedge on ``data`` with ``backend`` (a name or a backend object); final params and round times."""
    strategy = FedAvg()
    transport = InProcessTransport(
        lambda cid: LearnerClient(cid, learner, data.client(cid)),
        data.num_clients,
        strategy=strategy,
        seed=seed,
        backend=make_backend(backend) if isinstance(backend, str) else backend,
    )
    timer = _Timer()
    try:
        result = run(
            strategy=strategy,
            transport=transport,
            initial_params=initial,
            rounds=rounds,
            sampling=Sampling(count=per_round),
            train=cfg,
            seed=seed,
            callbacks=[timer],
        )
    finally:
        transport.close()
    return result.state.params, timer.times


def steady(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) > 1 else times)


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="a")
    ap.add_argument("--model", choices=("logreg", "mlp"), default="logreg")
    ap.add_argument("--backend", default="vectorized")
    ap.add_argument("--quick", action="store_true", help="a small smoke run")
    ap.add_argument(
        "--skip-reference", action="store_true", help="do not time the plain loop (no ratio, no weight check)"
    )
    ap.add_argument(
        "--module-only", action="store_true", help="train the torch module with torch alone (no dense kernel)"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads for both fedge and the reference (default 1)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    num_clients, per_round, rounds = QUICK if args.quick else SIZES[args.size]
    t0 = time.perf_counter()
    data = w2(num_clients, seed=SEED)
    build_s = time.perf_counter() - t0
    built = build_learner(args.model, "torch", (60,), 10, (64,))
    assert isinstance(built, TorchLearner)
    learner = TorchLearner(make_module(args.model)) if args.module_only else built
    torch.manual_seed(SEED)
    initial = get_params(make_module(args.model)())
    params, times = fedge_run(data, learner, initial, rounds, per_round, args.backend)
    s_round = steady(times)
    out: dict[str, object] = {
        "workload": f"W2({'quick' if args.quick else args.size})-{args.model}",
        "backend": args.backend,
        "kernel": learner.kernel is not None,
        "clients": num_clients,
        "clients_per_round": per_round,
        "rounds": rounds,
        "torch_threads": args.threads,
        "build_s": round(build_s, 3),
        "s_per_round": round(s_round, 4),
        "updates_per_s": round(per_round / s_round, 1),
    }
    if not args.skip_reference:
        ref, ref_times = plain_loop(data, make_module(args.model)(), initial, rounds, per_round)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(params, ref, strict=True))
        out.update(
            {
                "reference_s_per_round": round(steady(ref_times), 4),
                "ratio_to_plain_loop": round(s_round / steady(ref_times), 4),
                "max_abs_weight_diff": diff,
                "weights_match": diff <= 1e-5,
            }
        )
    _loss, acc = learner.evaluate(params, data.x_central, data.y_central)  # type: ignore[arg-type]
    out.update(
        {
            "test_accuracy": round(acc, 4),
            "wall_s": round(time.perf_counter() - t_start, 2),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }
    )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
