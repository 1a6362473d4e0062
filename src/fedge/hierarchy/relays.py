"""Relays in process: HierFAVG's edge aggregation as an execution :class:`~fedge.transport.inprocess.Backend`.

HierFAVG: Liu, Zhang, Song and Letaief, "Client-Edge-Cloud Hierarchical Federated Learning",
IEEE ICC 2020. Each relay (a vehicle's gateway) runs ``kappa1`` edge steps per cloud round
with its children (the vehicle's zonal ECUs): the children train from the relay's model, the
relay replaces its model by the weighted mean of theirs, and after the last step it sends the
cloud one :class:`~fedge.engine.aggregator.PartialSum` of named terms, never a child's update.
(The paper calls the edge steps per cloud round κ2 and the local steps per edge step κ1;
fedge's ``kappa1`` counts the edge steps, its local steps are ``[training]``'s.)

Every child's update passes through the round's own :class:`~fedge.engine.aggregator.Reducer`
(pipeline undo, validation, ``strategy.contribution``), so the cloud's strategy is unchanged.
From the second edge step on, a child's delta is taken relative to the relay's model, so the
reducer sees it re-based onto the cloud's model (``relay model - cloud model + delta``): the
relay's last sum is then exactly the terms of ``relay model - cloud model`` weighted by its
children's examples, and the cloud's weighted mean over relays is HierFAVG's. With
``kappa1 = 1`` nothing is re-based and the sum of relay sums is the flat round's sum.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedge.core.errors import ConfigError, FedgeError
from fedge.core.params import Params, nbytes
from fedge.core.types import ClientContext, ClientUpdate, Metrics, client_rng
from fedge.engine.aggregator import ClientFailure, PartialSum, Reducer
from fedge.strategies.aggregate import Accumulator, Terms, apply_step
from fedge.strategies.base import Strategy
from fedge.transport.base import FitResult
from fedge.transport.inprocess import Backend, ClientRuntime, FitTask

EDGE_STREAM = 0x4E1A0
"""Client generators of edge step ``k >= 1`` use stream ``EDGE_STREAM + k`` (step 0 is the flat round's)."""
WIRE_BYTES = 4
"""Bytes per summed entry a relay sends up (float32, as a client's uncompressed update)."""


@dataclass(frozen=True)
class Topology:
    """Clients grouped under relays: client ``c`` is child ``c % fanout`` of relay ``c // fanout``."""

    num_clients: int
    fanout: int

    def __post_init__(self) -> None:
        if self.fanout < 1:
            raise ConfigError(f"a relay needs at least one child, got fanout = {self.fanout}")
        if self.num_clients % self.fanout:
            raise ConfigError(f"{self.num_clients} clients are not a whole number of relays of {self.fanout} children")

    @property
    def num_relays(self) -> int:
        return self.num_clients // self.fanout

    def relay_of(self, cid: int) -> int:
        return cid // self.fanout

    def group(self, ids: Sequence[int]) -> dict[int, list[int]]:
        """The relays that have selected children, each with its children in the order given."""
        out: dict[int, list[int]] = {}
        for cid in ids:
            out.setdefault(self.relay_of(int(cid)), []).append(int(cid))
        return dict(sorted(out.items()))


@dataclass(frozen=True)
class ChildWork:
    """What one child did in one edge step, for the cost model: its examples, local steps and bytes."""

    num_examples: float
    steps: int
    down_bytes: int
    up_bytes: int


@dataclass
class RelayTrace:
    """One relay's part of a cloud round: each edge step's children, and its own traffic to the cloud."""

    relay: int
    steps: list[dict[int, ChildWork]] = field(default_factory=list)
    down_bytes: int = 0
    """The cloud's model as the relay received it (aggregate), or every child's copy (forward)."""
    up_bytes: int = 0
    """The relay's partial sum (aggregate), or every child's update passed on (forward)."""


def terms_bytes(terms: Terms) -> int:
    """What a partial sum of ``terms`` costs on the wire (:data:`WIRE_BYTES` per entry)."""
    return WIRE_BYTES * sum(int(np.asarray(t).size) for tensors in terms.values() for t in tensors)


class EdgeRuntime(ClientRuntime):
    """The client runtime of edge step ``step``: the same clients, each with its own generator for the step."""

    def __init__(self, base: ClientRuntime, step: int) -> None:
        super().__init__(base.client_fn, base.strategy, base.pipeline, base.seed)
        self.step = step

    def context(self, cid: int, round_num: int, state: dict[str, Any]) -> ClientContext:
        rng = client_rng(self.seed, round_num, cid, EDGE_STREAM + self.step)
        return ClientContext(client_id=cid, round_num=round_num, rng=rng, state=state)


@dataclass
class RebasedReducer(Reducer):
    """The round's reducer for a child that trained from its relay's model: its decoded delta is
    re-based onto the cloud's model (``offset`` = relay model - cloud model) before it counts."""

    offset: Params | None = None

    def decode(self, update: ClientUpdate) -> ClientUpdate:
        update = super().decode(update)
        if self.offset is None:
            return update
        update.delta = [(o + d).astype(np.float32) for o, d in zip(self.offset, update.delta, strict=True)]
        return update


def rebased(reducer: Reducer, offset: Params | None) -> Reducer:
    if offset is None:
        return reducer
    return RebasedReducer(reducer.strategy, reducer.pipeline, reducer.rctx, reducer.validator, reducer.bound, offset)


def _metrics(update: ClientUpdate) -> Metrics:
    return {**update.metrics, "num_examples": float(update.num_examples), "uplink_bytes": float(update.uplink_bytes)}


def _work(m: Metrics, down: int) -> ChildWork:
    return ChildWork(
        num_examples=float(m.get("num_examples", 0.0)),
        steps=int(m.get("steps", 0.0)),
        down_bytes=down,
        up_bytes=int(m.get("uplink_bytes", 0.0)),
    )


class HierarchyBackend:
    """Runs a round's cohort through its relays (see the module docstring) on an ``inner`` backend.

    ``aggregate=False`` is the flat baseline over the same network: each relay only forwards
    its children's updates to the cloud (``kappa1`` must then be 1). After every round,
    :attr:`trace` says what each relay and its children did, for the cost model.
    """

    name = "hierarchy"

    def __init__(self, inner: Backend, topology: Topology, kappa1: int = 1, *, aggregate: bool = True) -> None:
        if kappa1 < 1:
            raise ConfigError(f"hierarchy.kappa1 must be >= 1, got {kappa1}")
        if not aggregate and kappa1 != 1:
            raise ConfigError("hierarchy.kappa1 > 1 needs relay = 'aggregate': a forwarding relay has no model")
        self.inner, self.topology, self.kappa1, self.aggregate = inner, topology, kappa1, aggregate
        self.trace: list[RelayTrace] = []
        self._runtimes: dict[int, EdgeRuntime] = {}

    def fit(self, task: FitTask) -> Iterator[FitResult]:
        if self.aggregate and task.reducer is None:
            raise ConfigError(
                "a relay sums its children's updates, so [hierarchy] needs a strategy that aggregates sums "
                "and no transform that sums the cohort itself (secure aggregation)"
            )
        self.trace = []
        for relay, children in self.topology.group(task.client_ids).items():
            trace = RelayTrace(relay)
            self.trace.append(trace)
            if self.aggregate:
                yield from self._relay(task, children, trace)
            else:
                yield from self._forward(task, children, trace)

    def edge_round(self, task: FitTask) -> Iterator[FitResult]:
        """``task``'s clients as the children of one relay: its ``kappa1`` edge steps, then its one
        partial sum (or its children's failures). What ``fedge relay`` runs for each parent round."""
        if task.reducer is None:
            raise ConfigError("a relay sums its children's updates, so it needs the round's reducer")
        trace = RelayTrace(0)
        self.trace = [trace]
        yield from self._relay(task, list(task.client_ids), trace)

    def _runtime(self, base: ClientRuntime, step: int) -> ClientRuntime:
        if step == 0:
            return base
        cached = self._runtimes.get(step)
        if cached is None or cached.client_fn is not base.client_fn:
            cached = self._runtimes[step] = EdgeRuntime(base, step)
        return cached

    def _forward(self, task: FitTask, children: list[int], trace: RelayTrace) -> Iterator[FitResult]:
        down = nbytes(task.params)
        work: dict[int, ChildWork] = {}
        sub = FitTask(task.runtime, task.round_num, children, task.params, task.ins, task.states, task.reducer)
        for item in self.inner.fit(sub):
            if isinstance(item, ClientUpdate):
                work[item.client_id] = _work(_metrics(item), down)
            elif isinstance(item, PartialSum):
                work.update((c, _work(m, down)) for c, m in zip(item.client_ids, item.metrics, strict=False))
            yield item
        trace.steps.append(work)
        trace.down_bytes = down * len(work)
        trace.up_bytes = sum(w.up_bytes for w in work.values())

    def _relay(self, task: FitTask, children: list[int], trace: RelayTrace) -> Iterator[FitResult]:
        assert task.reducer is not None
        params, offset = task.params, None
        down = nbytes(task.params)
        alive, failures = list(children), list[ClientFailure]()
        acc, ids, metrics = Accumulator(), list[int](), list[Metrics]()
        for step in range(self.kappa1):
            reducer = rebased(task.reducer, offset)
            sub = FitTask(
                self._runtime(task.runtime, step), task.round_num, alive, params, task.ins, task.states, reducer
            )
            acc, ids, metrics = Accumulator(), [], []
            for item in self.inner.fit(sub):
                if isinstance(item, ClientFailure):
                    failures.append(item)
                elif isinstance(item, PartialSum):
                    acc.add(item.terms, count=len(item.client_ids))
                    ids += item.client_ids
                    metrics += item.metrics
                    failures += item.failures
                else:
                    try:
                        terms = reducer(item)
                    except FedgeError as exc:
                        failures.append(ClientFailure(item.client_id, "rejected", str(exc)))
                        continue
                    acc.add(terms)
                    ids.append(item.client_id)
                    metrics.append(_metrics(item))
            trace.steps.append({c: _work(m, down) for c, m in zip(ids, metrics, strict=False)})
            alive = [c for c in alive if c in set(ids)]
            if not alive:
                break
            if step < self.kappa1 - 1:
                # The relay's new model: the cloud's plus the mean of its children's re-based deltas.
                params = apply_step(task.params, Strategy.mean_delta(acc.sums))
                offset = [(e - g).astype(np.float32) for e, g in zip(params, task.params, strict=True)]
        trace.down_bytes = down
        if not ids:
            yield from failures
            return
        num_examples = int(sum(m.get("num_examples", 0.0) for m in metrics))
        trace.up_bytes = terms_bytes(acc.sums)
        yield PartialSum(
            terms=acc.sums,
            client_ids=ids,
            num_examples=num_examples,
            metrics=metrics,
            uplink_bytes=trace.up_bytes,
            failures=failures,
        )

    @property
    def round_info(self) -> dict[str, Any]:
        """The inner backend's figures of its last pass (the vectorized backend's buckets, auto's pick)."""
        info: dict[str, Any] = getattr(self.inner, "round_info", {})
        return info

    def configure(self, cfg: Any) -> None:
        """Hand the ``[engine]`` options to the inner backend."""
        configure = getattr(self.inner, "configure", None)
        if configure is not None:
            configure(cfg)

    def close(self) -> None:
        self.inner.close()
