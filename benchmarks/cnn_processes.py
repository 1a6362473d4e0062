"""A small CNN on digits (1x8x8 images), 100 clients per round: ``processes`` vs a plain loop.

The ``processes`` backend runs with one worker (one core) and with two workers (two
cores); the reference is the plain PyTorch loop of ``w2_scale.py`` in this process, on
the same sampled clients and mini-batches. Every run must end with the reference's
weights (to 1e-5). Prints one JSON line.

    python benchmarks/cnn_processes.py
    python benchmarks/cnn_processes.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from w2_scale import fedge_run, peak_rss_mib, plain_loop, steady

from fedge.clients.torch_learner import TorchLearner, get_params
from fedge.core.types import TrainConfig
from fedge.data.datasets import digits
from fedge.models import torch_module
from fedge.simulation.backends import ProcessesBackend

SEED = 0


def cnn() -> torch.nn.Module:
    return torch_module("cnn", (64,), 10)


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small smoke run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    clients, rounds = (20, 3) if args.quick else (100, args.rounds)
    cfg = TrainConfig(epochs=1 if args.quick else args.epochs, batch_size=10, lr=0.05)
    data = digits(num_clients=clients, scheme="iid", seed=SEED)
    torch.manual_seed(SEED)
    initial = get_params(cnn())
    cpu0 = time.process_time()
    ref, ref_times = plain_loop(data, cnn(), initial, rounds, clients, cfg, SEED)
    ref_cpu = (time.process_time() - cpu0) / rounds
    out: dict[str, object] = {
        "workload": f"cnn-digits{'-quick' if args.quick else ''}",
        "backend": "processes",
        "clients_per_round": clients,
        "rounds": rounds,
        "local_epochs": cfg.epochs,
        "reference_s_per_round": round(steady(ref_times), 4),
        "reference_cpu_s_per_round": round(ref_cpu, 4),
    }
    for workers in (1, 2):
        backend = ProcessesBackend(workers=workers)
        params, times = fedge_run(data, TorchLearner(cnn), initial, rounds, clients, backend, cfg, SEED)
        busiest = [max(r) for r in backend.worker_cpu_s[1:] or backend.worker_cpu_s]
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(params, ref, strict=True))
        out.update(
            {
                f"s_per_round_{workers}w": round(steady(times), 4),
                f"updates_per_s_{workers}w": round(clients / steady(times), 1),
                f"ratio_to_plain_loop_{workers}w": round(steady(times) / steady(ref_times), 4),
                f"max_abs_weight_diff_{workers}w": diff,
                f"busiest_worker_cpu_s_per_round_{workers}w": round(float(np.median(busiest)), 4),
            }
        )
    out["weights_match"] = all(
        float(v) <= 1e-5
        for k, v in out.items()  # type: ignore[arg-type]
        if k.startswith("max_abs_weight_diff")
    )
    out.update({"wall_s": round(time.perf_counter() - t_start, 2), "peak_rss_mib": round(peak_rss_mib(), 1)})
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
