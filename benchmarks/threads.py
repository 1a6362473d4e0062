"""``[training] threads`` on a busy machine: the default ``fedge run`` with 1 thread against one per core.

Starts one busy-looping process per core (the "other work" of a shared machine), then runs
the default federation (digits, MLP, FedAvg) for ``--rounds`` rounds in a fresh ``fedge run``
process, once with ``threads = 1`` (fedge's default for the sequential backend) and once
with one thread per core (PyTorch's own default), alternating ``--repeats`` times. Prints
the median wall times and their ratio as one JSON line.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit


def _spin(stop: mp.synchronize.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _run(threads: int, rounds: int, out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    cmd = [sys.executable, "-m", "fedge.cli.main", "run", "-q", "--rounds", str(rounds)]
    cmd += ["--set", f"training.threads={threads}", "-o", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1800)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="3 rounds, 1 repeat")
    args = parser.parse_args()
    rounds, repeats = (3, 1) if args.quick else (args.rounds, args.repeats)
    cores = len(os.sched_getaffinity(0))
    stop = mp.Event()
    hogs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(cores)]
    for h in hogs:
        h.start()
    times: dict[int, list[float]] = {1: [], cores: []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(repeats):
                for t in (1, cores):
                    times[t].append(_run(t, rounds, Path(tmp) / f"t{t}-{r}"))
    finally:
        stop.set()
        for h in hogs:
            h.join(timeout=5)
    one, per_core = statistics.median(times[1]), statistics.median(times[cores])
    emit(
        {
            "workload": "default fedge run on a machine with every core busy",
            "backend": "sequential",
            "rounds": rounds,
            "cores": cores,
            "wall_s": round(one, 2),
            "wall_s_threads_1": round(one, 2),
            f"wall_s_threads_{cores}": round(per_core, 2),
            "speedup_of_1_thread": round(per_core / one, 2),
        }
    )


if __name__ == "__main__":
    main()
