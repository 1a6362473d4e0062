"""The ``processes`` backend: N forked worker processes, one partial sum each.

The design of pfl-research (Granqvist et al., "pfl-research: simulation framework for
accelerating research in Private Federated Learning", 2024): each worker holds one
reused model and trains its share of the cohort sequentially; shares are balanced by
dataset size; each worker reduces its clients where they ran and sends back one
:class:`~fedge.engine.aggregator.PartialSum`, so a round moves N sums, not K updates.

Workers are forked once per runtime and reused across rounds, so the client factory
(often a closure over the federation's arrays) is shared copy-on-write and never
pickled. A worker that dies mid-round is detected through its process sentinel: its
clients are reported as failures, a fresh worker replaces it, and the round goes on; so is
one that overruns ``timeout_s`` (a client stuck in a loop).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from fedge.core.errors import ConfigError
from fedge.core.threads import apply_threads
from fedge.simulation.backends._shard import (
    Outcome,
    emit,
    lost,
    run_task,
    split_round,
)
from fedge.transport.base import FitResult
from fedge.transport.inprocess import ClientRuntime, FitTask

log = logging.getLogger(__name__)

_RUNTIME: ClientRuntime | None = None
"""The runtime a forked worker inherits from its parent (set just before forking)."""


def _worker_main(conn: Connection, threads: int) -> None:
    """Serve tasks until told to stop, the pipe closes, or the parent process is gone.

    Ctrl-C reaches the whole process group; the parent handles it (keeping the finished
    rounds) and closes the workers, so a worker ignores SIGINT rather than print a traceback.
    SIGTERM, with which the parent stops a worker, ends it as the default does, whatever
    handler the parent had installed when it forked (``fedge serve`` has one).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    apply_threads(threads)
    runtime = _RUNTIME
    assert runtime is not None
    parent = os.getppid()
    while True:
        if not conn.poll(1.0):
            if os.getppid() != parent:
                return
            continue
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            conn.send(("ok", run_task(runtime, task)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _Worker:
    def __init__(self, ctx: Any, runtime: ClientRuntime, threads: int) -> None:
        global _RUNTIME
        parent, child = ctx.Pipe()
        _RUNTIME = runtime
        try:
            self.process: BaseProcess = ctx.Process(target=_worker_main, args=(child, threads), daemon=True)
            self.process.start()
        finally:
            _RUNTIME = None
        child.close()
        self.conn: Connection = parent

    def stop(self, *, kill: bool = False) -> None:
        if not kill:
            with contextlib.suppress(OSError, BrokenPipeError):
                self.conn.send(None)
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class ProcessesBackend:
    """Train the cohort in ``workers`` forked processes (default: the usable CPU count)."""

    name = "processes"

    def __init__(self, workers: int = 0, threads_per_worker: int = 1, timeout_s: float = 0.0) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.threads_per_worker = threads_per_worker
        self._pool: list[_Worker] = []
        self._runtime: ClientRuntime | None = None
        if "fork" not in mp.get_all_start_methods():
            raise ConfigError("training.backend = 'processes' needs fork(); use 'vectorized' or 'ray'")
        self._ctx = mp.get_context("fork")
        self.worker_cpu_s: list[list[float]] = []
        """Per round, the CPU seconds of each worker's share (for benchmarks and tuning)."""

    def configure(self, engine: Any) -> None:
        """Take options from the ``[engine]`` config section."""
        self.workers = int(engine.workers)
        self.timeout_s = float(engine.worker_timeout_s)

    @property
    def size(self) -> int:
        return self.workers if self.workers > 0 else default_workers()

    def _ensure(self, runtime: ClientRuntime) -> None:
        if self._runtime is not runtime:
            self.close()
            self._runtime = runtime
        while len(self._pool) < self.size:
            self._pool.append(_Worker(self._ctx, runtime, self.threads_per_worker))

    def fit(self, task: FitTask) -> Iterator[FitResult]:
        if not task.client_ids:
            return
        self._ensure(task.runtime)
        states = task.states
        tasks = split_round(task, self.size)
        pending: dict[int, tuple[_Worker, list[int]]] = {}
        self.worker_cpu_s.append([])
        for worker, part in zip(self._pool, tasks, strict=False):
            share = part.client_ids
            try:
                worker.conn.send(part)
            except (OSError, BrokenPipeError):
                yield from self._lose(worker, share, "could not reach its worker process")
                continue
            pending[id(worker)] = (worker, share)
        try:
            yield from self._collect(pending, states)
        finally:
            for worker, _ in pending.values():
                worker.stop(kill=True)
                self._pool.remove(worker)

    def _collect(
        self, pending: dict[int, tuple[_Worker, list[int]]], states: dict[int, dict[str, Any]]
    ) -> Iterator[FitResult]:
        """Yield each worker's result as it arrives; a dead or overdue worker's share becomes failures."""
        deadline = time.monotonic() + self.timeout_s if self.timeout_s > 0 else None
        while pending:
            waitables: list[Any] = []
            for worker, _ in pending.values():
                waitables += [worker.conn, worker.process.sentinel]
            ready = wait(waitables, None if deadline is None else max(deadline - time.monotonic(), 0.0))
            if not ready:
                for key, (worker, share) in list(pending.items()):
                    del pending[key]
                    yield from self._lose(
                        worker, share, f"worker process {worker.process.pid} timed out after {self.timeout_s:g} s"
                    )
                return
            for key, (worker, share) in list(pending.items()):
                if worker.conn in ready or worker.conn.poll():
                    try:
                        status, payload = worker.conn.recv()
                    except (EOFError, OSError):
                        del pending[key]
                        yield from self._lose(worker, share, self._death(worker))
                        continue
                    del pending[key]
                    if status == "ok":
                        assert isinstance(payload, Outcome)
                        self.worker_cpu_s[-1].append(payload.cpu_s)
                        yield from emit(payload, states)
                    else:
                        yield from lost(share, f"worker error: {payload}")
                elif worker.process.sentinel in ready:
                    del pending[key]
                    yield from self._lose(worker, share, self._death(worker))

    @staticmethod
    def _death(worker: _Worker) -> str:
        worker.process.join(timeout=1)
        return f"worker process {worker.process.pid} died (exit code {worker.process.exitcode})"

    def _lose(self, worker: _Worker, share: list[int], reason: str) -> list[FitResult]:
        log.warning("processes backend: %s; %d clients lost this round", reason, len(share))
        worker.stop(kill=True)
        self._pool.remove(worker)
        return lost(share, reason)

    def close(self) -> None:
        for worker in self._pool:
            worker.stop()
        self._pool = []
        self._runtime = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
