"""Helpers shared by the benchmark scripts: peak RSS and the one-JSON-line output."""

from __future__ import annotations

import json
import resource
import sys
from typing import Any


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(record: dict[str, Any]) -> None:
    """Print the benchmark's result as one JSON line, last on stdout."""
    record.setdefault("peak_rss_mib", round(peak_rss_mib(), 1))
    sys.stdout.write(json.dumps(record, default=float) + "\n")
    sys.stdout.flush()


def plain_fedavg(data: Any, module: Any, initial: list[Any], rounds: int, sampling: Any, cfg: Any, seed: int) -> Any:
    """BENCHMARKS.md's reference loop, with no framework: for each sampled client, load the global
    weights into one reused ``nn.Module``, train it with ``torch.optim.SGD`` over slices of its
    tensors, accumulate the sample-weighted average. The clients are sampled and the batches drawn
    as fedge samples and draws them (the round's and each client's generator), so both must end
    with the same weights. Returns the final weights and each round's seconds.
    """
    import time

    import numpy as np
    import torch
    from torch import nn

    from fedge.clients.base import batches
    from fedge.clients.torch_learner import get_params, set_params
    from fedge.core.types import client_rng
    from fedge.engine import round_rng

    glob = [np.asarray(p, np.float32).copy() for p in initial]
    times = []
    xt, yt = torch.from_numpy(data.x), torch.from_numpy(data.y)
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        ids = sampling.sample(list(range(data.num_clients)), round_rng(seed, r))
        total = [np.zeros(p.shape, np.float64) for p in glob]
        weight = 0.0
        for cid in ids:
            rows = data.train[cid]
            x, y = xt[rows], yt[rows]
            set_params(module, glob)
            opt = torch.optim.SGD(module.parameters(), lr=cfg.lr)
            rng = client_rng(seed, r, cid)
            for _ in range(cfg.epochs):
                for idx in batches(len(y), cfg.batch_size, rng):
                    ib = torch.from_numpy(idx)
                    opt.zero_grad()
                    nn.functional.cross_entropy(module(x[ib]), y[ib]).backward()
                    opt.step()
            n = float(len(y))
            for acc, p, g in zip(total, get_params(module), glob, strict=True):
                acc += (p.astype(np.float64) - g) * n
            weight += n
        glob = [(g + (s / weight).astype(np.float32)).astype(np.float32) for g, s in zip(glob, total, strict=True)]
        times.append(time.perf_counter() - t0)
    return glob, times
