"""How many CPU threads the numeric libraries may use, set once for a whole run.

PyTorch's intra-op pool and the BLAS libraries (OpenBLAS, MKL, OpenMP) each start one
thread per core by default. Federated simulation trains many tiny models one after another
(or one per worker process), so those pools mostly wait for each other and for whatever
else runs on the machine: on a 2-core machine with one core busy, ten rounds of the default
``fedge run`` took 12.4 s with the default pools and 6.9 s with one thread.

``threads = 0`` (auto) therefore means: the ``OMP_NUM_THREADS`` the user exported, if any;
else one thread, both for the ``sequential``/``debug`` backends (small per-client batches)
and per worker for ``processes``/``ray`` (the workers already use every core). Only the
``vectorized`` backend, which trains a whole cohort in large batched tensors, gets more:
``min(usable cores, 4)``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Read by the BLAS/OpenMP runtimes (and PyTorch) when they load; set for libraries not loaded yet."""

MULTI_THREADED_BACKENDS = frozenset({"vectorized"})


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@functools.cache
def _exported() -> str:
    """``OMP_NUM_THREADS`` as the user set it: read once, before :func:`apply_threads` first overwrites it."""
    return os.environ.get("OMP_NUM_THREADS", "")


def resolve_threads(threads: int, backend: str = "sequential") -> int:
    """The thread count ``threads`` stands for (``0`` = auto, see the module docstring)."""
    if threads > 0:
        return threads
    exported = _exported()
    if exported.isdigit() and int(exported) > 0:
        return int(exported)
    if backend in MULTI_THREADED_BACKENDS:
        return min(usable_cpus(), 4)
    return 1


def apply_threads(threads: int = 0, backend: str = "sequential") -> int:
    """Limit PyTorch and the BLAS/OpenMP pools of this process to ``threads``; returns the count.

    Applies to libraries already loaded (PyTorch through ``torch.set_num_threads``, BLAS
    through threadpoolctl when it is installed) and, through the environment variables, to
    those loaded later and to child processes. Call it in every process that trains, before
    the first model is built; worker processes call it with their own share.
    """
    _exported()  # remember the user's value before it is overwritten
    n = resolve_threads(threads, backend)
    for var in ENV_VARS:
        os.environ[var] = str(n)
    if importlib.util.find_spec("threadpoolctl") is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
        with contextlib.suppress(RuntimeError):  # allowed once, before any inter-op work
            torch.set_num_interop_threads(n)
    return n
