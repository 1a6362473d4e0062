"""What every worker-style backend shares: splitting a cohort and reducing a share of it.

A worker (a forked process or a Ray actor) receives a :class:`Task` — its share of the
round's :class:`~fedge.transport.inprocess.FitTask`: clients, parameters, instructions,
the clients' persistent states and the picklable :class:`~fedge.engine.aggregator.Reducer`
— trains the clients one after another with one reused model, and sends back an
:class:`Outcome`: one ``PartialSum`` (or, for strategies that need every update, the list
of updates) plus the clients' new states.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fedge.core.errors import FedgeError
from fedge.core.params import Params
from fedge.core.types import ClientUpdate, FitInstructions, Metrics
from fedge.engine.aggregator import ClientFailure, PartialSum, Reducer
from fedge.pipeline import Pipeline
from fedge.strategies.aggregate import Accumulator
from fedge.strategies.base import Strategy
from fedge.transport.base import FitResult
from fedge.transport.inprocess import ClientRuntime, FitTask


def balance(client_ids: Sequence[int], sizes: Sequence[int], parts: int) -> list[list[int]]:
    """Split ``client_ids`` into at most ``parts`` shares of similar total size.

    Longest-processing-time-first greedy (Graham, "Bounds on multiprocessing timing
    anomalies", SIAM J. Appl. Math. 1969): largest clients first, each to the lightest
    share. Empty shares are dropped; each share keeps ascending client order.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    heap: list[tuple[int, int]] = [(0, i) for i in range(parts)]
    shares: list[list[int]] = [[] for _ in range(parts)]
    order = sorted(range(len(client_ids)), key=lambda i: (-int(sizes[i]), i))
    for i in order:
        load, k = heapq.heappop(heap)
        shares[k].append(int(client_ids[i]))
        heapq.heappush(heap, (load + max(int(sizes[i]), 1), k))
    return [sorted(s) for s in shares if s]


def client_size(runtime: ClientRuntime, cid: int) -> int:
    """A client's training-set size when it exposes one (``client.data``), else 1."""
    data = getattr(runtime.client_fn(cid), "data", None)
    return int(getattr(data, "num_train", 1)) if data is not None else 1


@dataclass
class Task:
    """One worker's share of a round."""

    round_num: int
    client_ids: list[int]
    params: Params
    ins: FitInstructions
    states: dict[int, dict[str, Any]]
    reducer: Reducer | None
    strategy: Strategy
    pipeline: Pipeline


def split_round(fit: FitTask, workers: int) -> list[Task]:
    """The round's cohort as one :class:`Task` per worker, balanced by training-set size."""
    runtime = fit.runtime
    shares = balance(fit.client_ids, [client_size(runtime, c) for c in fit.client_ids], workers)
    return [
        Task(
            fit.round_num,
            share,
            fit.params,
            fit.ins,
            {c: fit.states.setdefault(c, {}) for c in share},
            fit.reducer,
            runtime.strategy,
            runtime.pipeline,
        )
        for share in shares
    ]


@dataclass
class Outcome:
    """What a worker sends back: a partial sum (or updates and failures) and new states."""

    result: PartialSum | None
    updates: list[ClientUpdate | ClientFailure] = field(default_factory=list)
    states: dict[int, dict[str, Any]] = field(default_factory=dict)
    cpu_s: float = 0.0
    """CPU seconds the worker spent on this share (how evenly the cohort was split)."""


def client_metrics(update: ClientUpdate) -> Metrics:
    return {**update.metrics, "num_examples": float(update.num_examples), "uplink_bytes": float(update.uplink_bytes)}


class PartialReducer:
    """Streams updates through a reducer into one :class:`PartialSum`."""

    def __init__(self, reducer: Reducer) -> None:
        self.reducer = reducer
        self.acc = Accumulator()
        self.ids: list[int] = []
        self.metrics: list[Metrics] = []
        self.failures: list[ClientFailure] = []
        self.examples = 0
        self.uplink = 0

    def add(self, item: ClientUpdate | ClientFailure) -> None:
        if isinstance(item, ClientFailure):
            self.failures.append(item)
            return
        self.uplink += item.uplink_bytes
        try:
            terms = self.reducer(item)
        except FedgeError as exc:
            self.failures.append(ClientFailure(item.client_id, "rejected", str(exc)))
            return
        self.acc.add(terms)
        self.ids.append(item.client_id)
        self.metrics.append(client_metrics(item))
        self.examples += item.num_examples

    def merge(self, part: PartialSum) -> None:
        """Fold in a sum already reduced elsewhere (a batched bucket's)."""
        self.acc.add(part.terms, len(part.client_ids))
        self.ids += part.client_ids
        self.metrics += part.metrics
        self.failures += part.failures
        self.examples += part.num_examples
        self.uplink += part.uplink_bytes

    def result(self) -> PartialSum:
        return PartialSum(
            terms=self.acc.sums,
            client_ids=self.ids,
            num_examples=self.examples,
            metrics=self.metrics,
            uplink_bytes=self.uplink,
            failures=self.failures,
        )


def fit_one(
    runtime: ClientRuntime, cid: int, params: Params, ins: FitInstructions, state: dict[str, Any]
) -> ClientUpdate | ClientFailure:
    """Run one client; an error becomes a :class:`ClientFailure` (the round goes on)."""
    try:
        out: ClientUpdate = runtime.fit(cid, params, ins, state)
        return out
    except Exception as exc:
        return ClientFailure(cid, "fit", f"{type(exc).__name__}: {exc}")


def run_task(runtime: ClientRuntime, task: Task) -> Outcome:
    """Train a worker's share sequentially and reduce it where it ran."""
    cpu0 = time.process_time()
    runtime.strategy = task.strategy
    runtime.pipeline = task.pipeline
    items = (fit_one(runtime, cid, task.params, task.ins, task.states.setdefault(cid, {})) for cid in task.client_ids)
    if task.reducer is None:
        updates = list(items)
        return Outcome(None, updates, task.states, time.process_time() - cpu0)
    part = PartialReducer(task.reducer)
    for item in items:
        part.add(item)
    return Outcome(part.result(), [], task.states, time.process_time() - cpu0)


def lost(client_ids: Sequence[int], reason: str) -> list[FitResult]:
    """Failures for every client of a share whose worker was lost."""
    return [ClientFailure(cid, "fit", reason) for cid in client_ids]


def emit(outcome: Outcome, states: dict[int, dict[str, Any]]) -> list[FitResult]:
    """Merge a worker's returned client states and list what the round loop receives."""
    states.update(outcome.states)
    if outcome.result is not None:
        return [outcome.result]
    return list(outcome.updates)
