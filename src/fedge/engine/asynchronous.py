"""Asynchronous buffered aggregation (FedBuff) on the virtual clock, on the synchronous engine's seams.

FedBuff: Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
AISTATS 2022; staleness functions from Xie et al., "Asynchronous Federated Optimization", 2019.

A dispatcher keeps up to ``C`` (``concurrency``) clients training at once, each on the model
version it was sent. Each client trains through the transport when it is dispatched and its
update *arrives* at ``dispatch time + simulated duration`` on a virtual clock. Arriving updates
go through the step's :class:`~fedge.engine.aggregator.Reducer` (pipeline undo, validation,
``strategy.contribution``) into a buffer; once ``K`` (``buffer_size``) have arrived the server
applies one step and the version advances. An update sent at version ``b`` that arrives at
version ``v`` has staleness ``τ = v - b`` and all its summed terms are scaled by ``s(τ)``, so a
FedAvg-family strategy's mean is normalised by the buffer's total weight::

    Δ = Σ s(τ_i) w_i Δ_i / Σ s(τ_i) w_i

Updates staler than ``max_staleness`` are dropped (counted as wasted). Each applied step is
one :class:`~fedge.simulation.history.RoundRecord`: ``round`` is the new version.

Under secure aggregation a buffer is one SecAgg+ session (the transform's
:meth:`~fedge.transport.exchange.CohortSum.sum_cohort` over the transport's exchange, the
same orchestrator as a synchronous round): the arriving updates carry no numbers, each
client holds its input unencoded, and when the buffer is full the session sends each
member its staleness weight ``s(τ)`` with its share inbox; the client scales and encodes
its input, masks it, and the server learns only ``Σ s(τ_i) · terms_i``. Under secure
aggregation and central DP (:func:`one_per_step`) a client whose update waits in the open
buffer is not dispatched again until the buffer is applied, so no client is in a step twice.

The clock: with ``[devices]`` enabled a client's duration is its device's cost model time for
the steps it reported (download, compute, upload) and dispatch draws only from clients online
at the current simulated time; otherwise every client takes :data:`DEFAULT_STEP_S` simulated
seconds per local step it reported. Everything random draws from generators derived from the
run seed, so a seed fixes the history.

Over a transport whose clients train in real time (a :class:`~fedge.transport.base.Dispatcher`:
``fedge serve``'s gRPC transport) the same loop dispatches each batch without waiting and takes
the updates in the order they really arrive; ``τ`` comes from the version stamp of the task the
update answers, a client that misses its deadline frees its slot, and the clock is the server's
wall clock. There a client whose update waits in the open buffer is not dispatched again until
the buffer is applied (as under :func:`one_per_step`): one node cannot fill a step with its own
updates, and with ``K = C`` a step is exactly a synchronous round.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.config.schema import Experiment, opt
from fedge.core.errors import AggregationError, ConfigError, FedgeError
from fedge.core.params import nbytes
from fedge.core.types import ClientUpdate, TrainConfig
from fedge.engine.aggregator import ClientFailure, PartialSum, Reducer
from fedge.engine.rounds import (
    Callback,
    EvalPlan,
    Evaluator,
    RoundPolicy,
    RunResult,
    Steps,
    check_pipeline,
    round_rng,
    start_run,
)
from fedge.engine.state import RoundState
from fedge.pipeline import Pipeline, RoundContext, Transform
from fedge.plugins import Hooks
from fedge.simulation.history import RoundRecord
from fedge.simulation.sampling import Sampling
from fedge.strategies.aggregate import Accumulator, Terms
from fedge.strategies.base import Strategy, StrategyState
from fedge.strategies.influence import InfluenceBound, InfluenceLimits
from fedge.transport.base import Dispatcher
from fedge.transport.exchange import CohortSum

if TYPE_CHECKING:
    from fedge.devices.policy import DevicePolicy
    from fedge.federation import BuildContext
    from fedge.transport.base import Transport

STALENESS = ("constant", "polynomial", "hinge")
ASYNC_STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedopt", "fedadam", "fedyogi", "fedadagrad")
"""Strategies whose step is a state transition over the summed ``delta``/``weight`` terms only."""
DEFAULT_STEP_S = 1.0
"""Simulated seconds per local step when the device simulation is off."""
IDLE_S = 60.0
"""How far the clock moves when no client can be dispatched and none is in flight."""
MAX_IDLE = 10_000
MAX_ABORTS = 10
"""Secure sessions in a row that may abort before the run gives up."""
LIVE_WAIT_S = 0.2
"""Over a :class:`~fedge.transport.base.Dispatcher`: how long one wait for an arrival lasts before
the dispatcher looks again for a free slot and a free client."""
LIVE_IDLE_S = 300.0
"""Over a Dispatcher: wall seconds with nothing in flight and nobody to dispatch before the run gives up."""
DISPATCHES, APPLIED, WASTED = "async_dispatches", "async_updates_applied", "async_updates_wasted"
"""The strategy state's counters of an asynchronous run (``scalars``), so a resumed run continues them:
the dispatch number (each dispatch's round number, which seeds its clients), updates applied, wasted."""


@dataclass
class AsyncConfig:
    enabled: bool = opt(False, "asynchronous buffered aggregation (FedBuff): rounds = applied server steps")
    buffer_size: int = opt(10, "K: updates per applied server step", min=1)
    concurrency: int = opt(20, "C: clients training at once (K <= C)", min=1)
    staleness: str = opt("polynomial", "staleness weight s(τ) of an update", choices=STALENESS)
    staleness_exponent: float = opt(0.5, "polynomial: s = (1+τ)^-a; hinge: the slope a", min=0)
    staleness_hinge: int = opt(10, "hinge: s = 1 up to τ = b, then 1 / (a (τ - b) + 1)", min=0)
    max_staleness: int = opt(-1, "updates staler than this are dropped (-1 = keep all)", min=-1)
    server_lr: float = opt(1.0, "server learning rate on the buffer's mean delta", min=0, exclusive_min=True)


def staleness_weight(tau: int, kind: str = "polynomial", exponent: float = 0.5, hinge: int = 10) -> float:
    """``s(τ)``: 1 (constant), ``(1+τ)^-a`` (polynomial), or 1 up to ``b`` then ``1/(a(τ-b)+1)`` (hinge)."""
    if tau < 0:
        raise AggregationError(f"staleness must be >= 0, got {tau}")
    if kind == "constant":
        return 1.0
    if kind == "polynomial":
        return float((1.0 + tau) ** -exponent)
    if kind == "hinge":
        return 1.0 if tau <= hinge else 1.0 / (exponent * (tau - hinge) + 1.0)
    raise ConfigError(f"async.staleness: {kind!r} is not one of {', '.join(STALENESS)}")


def scale_terms(terms: Terms, factor: float) -> Terms:
    """Every summed term of one update times ``factor`` (its delta and its weight alike)."""
    if factor == 1.0:
        return terms
    return {k: [np.asarray(a, dtype=np.float64) * factor for a in v] for k, v in terms.items()}


class Clock:
    """The virtual clock's view of the fleet: who is online when, how long an update takes."""

    def online(self, ids: list[int], now: float) -> list[int]:
        return ids

    def duration(self, cid: int, update: ClientUpdate) -> tuple[float, float]:
        """(simulated seconds, joules) of ``cid`` producing ``update``: :data:`DEFAULT_STEP_S` per step."""
        steps = float(update.metrics.get("steps", 1.0))
        return DEFAULT_STEP_S * max(steps, 1.0), math.nan


class DeviceClock(Clock):
    """Durations, energy and availability from the device simulation (:class:`~fedge.devices.DevicePolicy`)."""

    def __init__(self, devices: DevicePolicy) -> None:
        self.devices = devices

    def online(self, ids: list[int], now: float) -> list[int]:
        eligible = [c for c in ids if c not in self.devices.ineligible]
        return self.devices.availability.online(eligible, now)

    def duration(self, cid: int, update: ClientUpdate) -> tuple[float, float]:
        steps = int(update.metrics.get("steps", 1))
        cost = self.devices.cost(cid, steps, float(update.uplink_bytes))
        return cost.total_s, cost.energy_j


def clock_for(policy: RoundPolicy | None) -> Clock:
    """The clock a round policy implies: the device simulation's, else the default step clock."""
    from fedge.devices.policy import DevicePolicy

    if policy is None or type(policy) is RoundPolicy:
        return Clock()
    if isinstance(policy, DevicePolicy):
        return DeviceClock(policy)
    raise ConfigError(f"[async] runs on the virtual clock and cannot use round policy {type(policy).__name__}")


@dataclass(order=True)
class _InFlight:
    finish: float
    seq: int
    cid: int = field(compare=False)
    base: int = field(compare=False)
    update: ClientUpdate = field(compare=False)
    energy: float = field(compare=False)


@dataclass
class _Buffer:
    """The updates of the step being filled, kept in dispatch order so the sum's order is fixed.

    ``entries`` are plain updates' staleness-scaled terms; under secure aggregation ``secure``
    holds the (masked, numberless) updates with their staleness weights for the session.
    """

    rctx: RoundContext
    reducer: Reducer
    entries: list[tuple[int, int, Terms]] = field(default_factory=list)
    secure: list[tuple[int, ClientUpdate, float]] = field(default_factory=list)
    held: list[tuple[int, int, ClientUpdate, float]] = field(default_factory=list)
    """Decoded updates waiting for the influence bound's window (see :meth:`contribute_held`)."""
    staleness: list[int] = field(default_factory=list)
    tau: dict[int, int] = field(default_factory=dict)
    """Each buffered update's staleness, by its dispatch order."""
    dropped: dict[str, list[int]] = field(default_factory=dict)
    losses: list[tuple[float, float]] = field(default_factory=list)
    uplink: int = 0
    downlink: int = 0
    energy: float = 0.0
    wasted: int = 0

    def drop(self, cid: int, reason: str) -> None:
        self.dropped.setdefault(reason, []).append(cid)

    def size(self) -> int:
        return len(self.entries) + len(self.secure) + len(self.held)

    def members(self) -> list[int]:
        """The clients whose update waits in the buffer."""
        return (
            [cid for _, cid, _ in self.entries]
            + [u.client_id for _, u, _ in self.secure]
            + [cid for _, cid, _, _ in self.held]
        )

    def contribute_held(self) -> list[int]:
        """Reduce the decoded updates held back (in arrival order) into ``entries``; the ids it rejected.

        An influence bound whose window is not yet full enough (the first buffer of a server
        process) has its arrivals held until it is, or until the buffer is full, as the
        synchronous gRPC transport does: then the bounds do not depend on the order of arrival."""
        rejected = []
        for order, cid, update, factor in self.held:
            try:
                self.entries.append((order, cid, scale_terms(self.reducer.contribute(update), factor)))
            except FedgeError as exc:
                self.drop(cid, f"rejected: {exc}")
                self.tau.pop(order, None)
                rejected.append(cid)
        self.held = []
        return rejected

    def total(self) -> Terms:
        acc = Accumulator()
        for _, _, terms in sorted(self.entries, key=lambda e: e[0]):
            acc.add(terms)
        return acc.sums

    def reopen(self, rctx: RoundContext, reducer: Reducer) -> None:
        """Empty the buffer for a new session at the same version (an aborted one's figures stay)."""
        self.rctx, self.reducer = rctx, reducer
        self.entries, self.secure, self.staleness, self.losses, self.tau, self.held = [], [], [], [], {}, []


def _weighted(values: Sequence[tuple[float, float]]) -> float:
    ok = [(v, w) for v, w in values if not math.isnan(v)]
    total = sum(w for _, w in ok)
    return sum(v * w for v, w in ok) / total if total > 0 else math.nan


def one_per_step(pipeline: Pipeline) -> bool:
    """Whether a client may have at most one update in each applied step: under secure aggregation
    (one session input per client) and with a transform on the sums (central DP's sensitivity)."""
    return any(isinstance(t, CohortSum) or type(t).aggregate is not Transform.aggregate for t in pipeline.transforms)


def check_async(strategy: Strategy, pipeline: Pipeline, cfg: AsyncConfig, population: int) -> None:
    """Refuse, in one line, what the asynchronous engine cannot run."""
    if cfg.buffer_size > cfg.concurrency:
        raise ConfigError(
            f"async.buffer_size ({cfg.buffer_size}) > async.concurrency ({cfg.concurrency}): a buffer could never fill"
        )
    if cfg.concurrency > population:
        raise ConfigError(f"async.concurrency ({cfg.concurrency}) exceeds the {population} clients")
    if strategy.name not in ASYNC_STRATEGIES or strategy.needs_individual_updates or strategy.per_client_models:
        raise ConfigError(
            f"[async] scales each update's summed terms by its staleness, which strategy {strategy.name!r} "
            f"cannot take; use one of {', '.join(ASYNC_STRATEGIES)}"
        )
    fixed = [t.name for t in pipeline.transforms if isinstance(t, CohortSum) and not getattr(t, "pending", False)]
    if fixed:
        raise ConfigError(
            f"[async] needs {', '.join(fixed)} to hold each input unencoded until its buffer's session "
            "(build it with pending=True) so the client can apply its staleness weight"
        )
    down = [t.name for t in pipeline.transforms if type(t).downlink is not Transform.downlink]
    if down:
        raise ConfigError(f"[async] sends each client its version's full model; {', '.join(down)} changes the downlink")


def run_async(
    *,
    strategy: Strategy,
    transport: Transport,
    initial_params: list[np.ndarray],
    rounds: int,
    config: AsyncConfig,
    sampling: Sampling | None = None,
    train: TrainConfig | None = None,
    pipeline: Pipeline | None = None,
    evaluator: Evaluator | None = None,
    eval_plan: EvalPlan | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    state: RoundState | StrategyState | None = None,
    max_update_norm: float | None = None,
    min_updates: int = 1,
    policy: RoundPolicy | None = None,
    influence: InfluenceLimits | InfluenceBound | None = None,
) -> RunResult:
    """Apply ``rounds`` buffered server steps (see the module docstring); the arguments are :func:`~fedge.engine.run`'s.

    ``sampling`` is unused beyond the synchronous run's signature: who trains is whoever is
    free and online when a slot opens (uniform among them). ``min_updates`` is met by
    construction (every step has ``buffer_size`` updates, less a secure session's dropouts).
    """
    del sampling, min_updates
    if rounds < 0:
        raise AggregationError(f"rounds must be >= 0, got {rounds}")
    train = train or TrainConfig()
    pipeline = pipeline if pipeline is not None else Pipeline()
    check_pipeline(strategy, pipeline)
    check_async(strategy, pipeline, config, transport.num_clients())
    eval_plan = eval_plan or EvalPlan()
    live = transport if isinstance(transport, Dispatcher) else None
    if live is not None and policy is not None and type(policy) is not RoundPolicy:
        raise ConfigError(
            f"[async] over deployed nodes runs on real time; round policy {type(policy).__name__} simulates it"
        )
    clock = clock_for(policy)
    state, bound, aggregator = start_run(
        strategy, transport, initial_params, pipeline, state, influence, max_update_norm=max_update_norm
    )
    k, c = config.buffer_size, config.concurrency
    cohort = next((t for t in pipeline.transforms if isinstance(t, CohortSum)), None)
    hold = one_per_step(pipeline) or live is not None
    session = state.round_num

    def context() -> tuple[RoundContext, Reducer]:
        # One context per buffer (a secure session's round number); equal to version + 1 unless a session aborted.
        nonlocal session
        session += 1
        rctx = RoundContext(
            round_num=session,
            rng=np.random.default_rng([seed, session, 0xA5F]),
            spec=aggregator.validator.spec,
            num_sampled=k,
        )
        return rctx, aggregator.reducer(rctx, k)

    steps = Steps(transport, rounds, evaluator, eval_plan, seed, callbacks, pipeline, bound)
    for cb in callbacks:
        cb.on_run_start(state, rounds)
    version = state.round_num
    batch = int(state.scalars.get(DISPATCHES, 0))
    total_updates, total_wasted = int(state.scalars.get(APPLIED, 0)), int(state.scalars.get(WASTED, 0))
    now, last_step_at, seq, idle, aborts = 0.0, 0.0, 0, 0, 0
    flight: list[_InFlight] = []
    dispatched: dict[int, int] = {}  # over a Dispatcher: client -> its dispatch order
    busy: set[int] = set()
    buf = _Buffer(*context())
    t0 = start = time.perf_counter()
    idle_since = start
    while version < rounds:
        if live is None:
            # Slots are refilled once every update arriving at this instant is in (equal durations: synchronous).
            free = c - len(flight) if not flight or flight[0].finish > now else 0
            ids = clock.online([i for i in transport.available(batch + 1) if i not in busy], now) if free else []
        else:
            free = c - live.in_flight()
            ids = [i for i in transport.available(batch + 1) if i not in busy] if free else []
        if ids:
            batch += 1
            rng = round_rng(seed, batch)
            picked = Sampling(count=min(free, len(ids))).sample(ids, rng)
            ins = strategy.configure(state, batch, train)
            buf.downlink += len(picked) * nbytes(state.params)
            if live is not None:
                live.dispatch(batch, picked, state.params, ins, version=version)
                for cid in picked:
                    seq += 1
                    dispatched[cid] = seq
                    busy.add(cid)
            else:
                for item in transport.fit(batch, picked, state.params, ins, None):
                    if isinstance(item, PartialSum):
                        raise ConfigError("[async] needs each update as it arrives; this backend sums the cohort first")
                    if isinstance(item, ClientFailure):
                        buf.drop(item.client_id, f"{item.stage}: {item.reason}")
                        continue
                    seconds, joules = clock.duration(item.client_id, item)
                    seq += 1
                    heapq.heappush(flight, _InFlight(now + seconds, seq, item.client_id, version, item, joules))
                    busy.add(item.client_id)
        if live is not None:
            got = live.arrival(LIVE_WAIT_S)
            if got is None:
                if not live.in_flight() and time.perf_counter() - idle_since > LIVE_IDLE_S:
                    raise AggregationError(f"[async]: no node could be dispatched for {LIVE_IDLE_S:g}s")
                continue
            idle_since = time.perf_counter()
            cid = got.result.client_id
            order = dispatched.pop(cid, seq)
            if isinstance(got.result, ClientFailure):
                busy.discard(cid)
                buf.drop(cid, f"{got.result.stage}: {got.result.reason}")
                continue
            now = time.perf_counter() - start
            arrived = _InFlight(now, order, cid, got.version, got.result, math.nan)
        else:
            if not flight:
                idle += 1
                if idle > MAX_IDLE:
                    raise AggregationError("[async]: no client could be dispatched for a long simulated time")
                now += IDLE_S
                continue
            idle = 0
            arrived = heapq.heappop(flight)
            now = max(now, arrived.finish)
        tau = version - arrived.base
        upd = arrived.update
        buf.uplink += upd.uplink_bytes
        if not math.isnan(arrived.energy):
            buf.energy += arrived.energy
        # Under one_per_step a client stays busy until its buffer is applied: at most one update of it per step.
        stale = 0 <= config.max_staleness < tau
        if not hold or stale:
            busy.discard(arrived.cid)
        if stale:
            buf.wasted += 1
            buf.drop(arrived.cid, "stale")
            continue
        s = staleness_weight(tau, config.staleness, config.staleness_exponent, config.staleness_hinge)
        try:
            if cohort is not None:
                buf.secure.append((arrived.seq, pipeline.server(upd, buf.rctx), s))
            else:
                buf.held.append((arrived.seq, arrived.cid, buf.reducer.decode(upd), s))
        except FedgeError as exc:
            busy.discard(arrived.cid)
            buf.drop(arrived.cid, f"rejected: {exc}")
            continue
        buf.staleness.append(tau)
        buf.tau[arrived.seq] = tau
        buf.losses.append((upd.metrics.get("train_loss", math.nan), float(upd.num_examples)))
        window = buf.reducer.bound
        if buf.held and (window is None or window.ready or buf.size() >= k):
            for cid in buf.contribute_held():
                busy.discard(cid)
        if buf.size() < k:
            continue
        if hold:
            busy.difference_update(buf.members())
        applied = k
        if cohort is None:
            summed = buf.total()
            members = [(order, cid) for order, cid, _ in sorted(buf.entries, key=lambda e: e[0])]
        else:
            ordered = sorted(buf.secure, key=lambda e: e[0])
            try:
                summed, applied, lost = cohort.sum_cohort(
                    [u for _, u, _ in ordered], buf.rctx, transport, factors={u.client_id: f for _, u, f in ordered}
                )
            except AggregationError as exc:
                # Nothing is revealed, nothing applied: the buffer's updates are wasted, a new session starts.
                aborts += 1
                if aborts > MAX_ABORTS:
                    raise AggregationError(f"[async]: {aborts} secure sessions in a row aborted; last: {exc}") from exc
                buf.wasted += len(ordered)
                buf.dropped[f"session aborted: {exc}"] = [u.client_id for _, u, _ in ordered]
                buf.reopen(*context())
                continue
            gone: set[int] = set()
            for reason, lost_ids in lost.items():
                for cid in lost_ids:
                    buf.drop(cid, reason)
                buf.wasted += len(lost_ids)
                gone.update(lost_ids)
            members = [(order, u.client_id) for order, u, _ in ordered if u.client_id not in gone]
        aborts = 0
        sums = pipeline.aggregate(summed, buf.rctx)
        if config.server_lr != 1.0:
            sums = {**sums, "delta": [d * config.server_lr for d in sums["delta"]]}
        state, metrics = strategy.aggregate(state, sums)
        version += 1
        total_updates += applied
        total_wasted += buf.wasted
        counters = {DISPATCHES: float(batch), APPLIED: float(total_updates), WASTED: float(total_wasted)}
        state = replace(state, round_num=version, scalars={**state.scalars, **counters})
        record = RoundRecord(
            round=version,
            participants=applied,
            failed=sum(len(v) for v in buf.dropped.values()),
            dropped=buf.dropped,
            uplink_bytes=buf.uplink,
            downlink_bytes=buf.downlink,
            train_loss=_weighted(buf.losses),
        )
        reported = [loss for loss, _ in buf.losses if not math.isnan(loss)]
        if bound is not None and reported:
            # A served run: the median, which one node reporting a huge example count cannot set (as in run_round).
            record.train_loss = float(np.median(reported))
            record.extra["client_reported_train_loss_median"] = record.train_loss
        extra: dict[str, Any] = {
            "version": version,
            "sim_time_s": now - last_step_at,
            "sim_clock_s": now,
            "staleness_mean": float(np.mean(buf.staleness)),
            "staleness_max": int(max(buf.staleness)),
            "updates_wasted": buf.wasted,
            "updates_applied_total": total_updates,
            "updates_wasted_total": total_wasted,
            "in_flight": len(flight) if live is None else live.in_flight(),
            "applied_clients": [cid for _, cid in members],
            "applied_staleness": [buf.tau[order] for order, _ in members],
        }
        if isinstance(clock, DeviceClock):
            extra["energy_j"] = buf.energy
        record.extra.update(extra)
        record.extra.update(metrics)
        record.extra.update(buf.rctx.info)
        last_step_at = now
        buf = _Buffer(*context())
        started, t0 = t0, time.perf_counter()
        steps.evaluate(record, version, state)
        if not steps.publish(record, state, started):
            break
    return steps.result(state)


def async_config(exp: Experiment | None) -> AsyncConfig | None:
    """The ``[async]`` section of ``exp`` when it is enabled, else None."""
    if exp is None or "async" not in exp.extensions:
        return None
    cfg: AsyncConfig = exp.section("async")
    return cfg if cfg.enabled else None


def devices_on(exp: Experiment) -> bool:
    devices = exp.extensions.get("devices")
    return devices is not None and bool(devices.enabled)


def validate(exp: Experiment, ctx: BuildContext) -> None:
    """Refuse, in one line, a combination ``[async]`` cannot run (see :func:`check_async` for the rest)."""
    cfg = async_config(exp)
    if cfg is None:
        return
    if ctx.deployed and devices_on(exp):
        raise ConfigError(
            "[async] under fedge serve runs on the nodes' real time; [devices] simulates it, so disable [devices]"
        )
    if cfg.buffer_size > cfg.concurrency:
        raise ConfigError(
            f"async.buffer_size ({cfg.buffer_size}) > async.concurrency ({cfg.concurrency}): a buffer could never fill"
        )
    if cfg.concurrency > ctx.population:
        raise ConfigError(f"async.concurrency ({cfg.concurrency}) exceeds the {ctx.population} clients")
    if exp.strategy.name not in ASYNC_STRATEGIES:
        raise ConfigError(
            f"[async] scales each update's summed terms by its staleness, which strategy {exp.strategy.name!r} "
            f"cannot take; use one of {', '.join(ASYNC_STRATEGIES)}"
        )
    comp = exp.extensions.get("compression")
    if comp is not None and getattr(comp, "downlink", "none") != "none":
        raise ConfigError(
            "[async] sends each client its own version's full model; compression.downlink encodes one difference "
            "per round for a whole cohort, so set compression.downlink = 'none' (the uplink codec works)"
        )
    privacy = exp.extensions.get("privacy")
    if privacy is not None and privacy.mode == "central" and privacy.sampling != "none":
        raise ConfigError(
            "[async] buffers are filled by whoever finishes first, not a uniform sample, so no sampling "
            f"amplification holds: set privacy.sampling = 'none' (got {privacy.sampling!r})"
        )
    devices = exp.extensions.get("devices")
    if devices is not None and devices.enabled and (devices.policy != "wait_all" or devices.selection != "uniform"):
        raise ConfigError(
            "[async] dispatches whoever is free and online; leave devices.policy = 'wait_all' and "
            "devices.selection = 'uniform'"
        )


HOOKS = Hooks(sections={"async": AsyncConfig}, validate=validate)

__all__ = [
    "ASYNC_STRATEGIES",
    "DEFAULT_STEP_S",
    "HOOKS",
    "STALENESS",
    "AsyncConfig",
    "Clock",
    "DeviceClock",
    "async_config",
    "check_async",
    "clock_for",
    "one_per_step",
    "run_async",
    "scale_terms",
    "staleness_weight",
    "validate",
]
