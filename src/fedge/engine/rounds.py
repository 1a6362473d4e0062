"""The run loop and one round, as free functions: simulation and deployment run the same.

One round: sample → configure → train (through the transport) → undo the pipeline,
validate, sum contributions as they stream in (the run's :class:`Aggregator`) → pipeline
aggregate hooks → strategy state transition → evaluate → record → callbacks. The loop owns
the round counter and, after every round, the run's :class:`RoundState`. Everything random
draws from generators derived from ``(seed, round)``, so a seed gives a bit-identical history.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.core.errors import AggregationError, ConfigError, FedgeError
from fedge.core.params import ParamSpec, nbytes
from fedge.core.types import ClientUpdate, EvalResult, Metrics, TrainConfig
from fedge.engine.aggregator import Aggregator, ClientFailure, PartialSum
from fedge.engine.state import RoundState
from fedge.pipeline import Pipeline, RoundContext, Transform
from fedge.simulation.history import History, RoundRecord
from fedge.simulation.sampling import Sampling
from fedge.strategies.aggregate import Accumulator
from fedge.strategies.base import Strategy, StrategyState
from fedge.strategies.influence import InfluenceBound, InfluenceLimits

if TYPE_CHECKING:
    from fedge.transport.base import Transport
from fedge.transport.exchange import CohortSum

Evaluator = Callable[[list[np.ndarray]], tuple[float, float]]
"""Centralised evaluation: parameters -> (loss, accuracy) on a held-out set."""


class Callback:
    """Hooks around a run (progress bars, checkpoints, dashboards); all optional."""

    def on_run_start(self, state: StrategyState, rounds: int) -> None:
        pass

    def on_round_state(self, record: RoundRecord, state: RoundState) -> None:
        """The run's whole state after the round (strategy, transforms, influence window), just
        before :meth:`on_round_end`: what a checkpoint saves, so that a resumed run continues exactly."""

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        pass

    def on_run_end(self, history: History, state: StrategyState) -> None:
        pass


@dataclass
class RoundPlan:
    """What a :class:`RoundPolicy` decided for one round's selected clients.

    ``train`` are the ids that really train (clients whose result would be discarded are
    not trained at all); ``dropped`` maps a reason to ids left out; ``overrides`` are
    per-client :class:`TrainConfig` changes (a straggler's ``max_steps``).
    """

    train: list[int]
    dropped: dict[str, list[int]] = field(default_factory=dict)
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)


class RoundPolicy:
    """Decides who is online, who is selected and who trains how much; then accounts the round.

    The default is the plain simulation: everyone is available, the sampler selects,
    everyone selected trains fully. The device simulation (cost model, availability,
    virtual clock, deadlines, over-commitment, Oort) is a policy.
    """

    def available(self, round_num: int, ids: list[int]) -> list[int]:
        return ids

    def select(self, round_num: int, available: list[int], sampling: Sampling, rng: np.random.Generator) -> list[int]:
        return sampling.sample(available, rng)

    def plan(self, round_num: int, selected: list[int], rng: np.random.Generator) -> RoundPlan:
        return RoundPlan(train=selected)

    def finish(self, round_num: int, record: RoundRecord, client_metrics: dict[int, Metrics]) -> None:
        """Add the round's accounting (simulated time, energy ...) to ``record.extra``."""


class StopRun(FedgeError):
    """Raised by a callback (or transform) to end a run cleanly after the current round."""


@dataclass
class EvalPlan:
    """When to evaluate: centrally every ``every`` rounds, and on ``federated_clients``
    sampled clients' own test data (0 = off, -1 = all clients)."""

    every: int = 1
    federated_clients: int = 0


@dataclass
class RunResult:
    history: History
    state: StrategyState
    stopped_early: str | None = None
    client_accuracy: dict[int, float] = field(default_factory=dict)
    round_state: RoundState | None = None
    """The run's whole state after its last round: resume a run from it with ``run(state=...)``."""


def round_rng(seed: int, round_num: int) -> np.random.Generator:
    return np.random.default_rng([seed, round_num, 0x5E1EC7])


def _weighted(values: Sequence[tuple[float, float]]) -> float:
    total = sum(w for _, w in values)
    return sum(v * w for v, w in values) / total if total > 0 else math.nan


def run_round(
    *,
    round_num: int,
    state: StrategyState,
    strategy: Strategy,
    transport: Transport,
    sampling: Sampling,
    train: TrainConfig,
    aggregator: Aggregator,
    seed: int,
    min_updates: int = 1,
    policy: RoundPolicy | None = None,
) -> tuple[StrategyState, RoundRecord]:
    """Train and aggregate one round; evaluation is the caller's.

    The ``aggregator`` validates and reduces what the transport yields; the transport (and
    its backend) gets the round's reducer from it. With an influence bound
    (``aggregator.bound``) each streamed update's weight and norm are bounded, and the round's
    ``train_loss`` is the median of the clients' reported losses (also kept as
    ``client_reported_train_loss_median``) rather than their weighted mean, which a client
    reporting a huge example count would set alone.
    """
    t0 = time.perf_counter()
    pipeline, validator, influence = aggregator.pipeline, aggregator.validator, aggregator.bound
    policy = policy or RoundPolicy()
    rng = round_rng(seed, round_num)
    available = policy.available(round_num, transport.available(round_num))
    selected = policy.select(round_num, available, sampling, rng)
    plan = policy.plan(round_num, selected, rng)
    ins = strategy.configure(state, round_num, train)
    ins.per_client.update(plan.overrides)
    rctx = RoundContext(round_num=round_num, rng=rng, spec=validator.spec, num_sampled=len(selected))
    reducer = aggregator.reducer(rctx, len(plan.train))
    acc = Accumulator()
    updates: list[ClientUpdate] = []
    dropped: dict[str, list[int]] = {k: list(v) for k, v in plan.dropped.items()}
    losses: list[tuple[float, float]] = []
    client_metrics: dict[int, Metrics] = {}
    uplink = 0
    blocks: dict[int, list[int]] = {}
    """A masked relay's participant id -> the client ids its input sums."""

    def drop(cid: int, reason: str) -> None:
        dropped.setdefault(reason, []).append(cid)

    # A transform that sums the cohort itself (secure aggregation) gets every update and the transport.
    cohort = next((t for t in pipeline.transforms if isinstance(t, CohortSum)), None)
    if cohort is not None and strategy.needs_individual_updates:
        raise ConfigError(
            f"strategy {strategy.name!r} needs individual updates, which {cohort.name} "
            "hides from the server; choose a strategy that aggregates sums"
        )
    individual = strategy.needs_individual_updates or cohort is not None
    down = pipeline.downlink(state.params, plan.train, rctx)
    sent = state.params if down is None else down.params
    for item in transport.fit(round_num, plan.train, sent, ins, None if individual else reducer):
        if isinstance(item, ClientFailure):
            drop(item.client_id, f"{item.stage}: {item.reason}")
        elif isinstance(item, PartialSum):
            if item.masked_by is not None and cohort is None:
                for c in item.client_ids:
                    drop(c, "rejected: a masked relay sum in a round without secure aggregation")
                continue
            if item.masked_by is not None:
                # A relay's sum, masked: one participant of the session, counting for its block.
                updates.append(item.participant())
                blocks[item.masked_by] = list(item.client_ids)
            else:
                acc.add(item.terms, count=len(item.client_ids))
            uplink += item.uplink_bytes
            if item.relay is not None:
                rctx.info.setdefault("relay_sums", {})[item.relay["node"]] = item.relay
            for f in item.failures:
                drop(f.client_id, f"{f.stage}: {f.reason}")
            losses += [(m.get("train_loss", math.nan), m.get("num_examples", 1.0)) for m in item.metrics]
            for cid, m in zip(item.client_ids, item.metrics, strict=False):
                client_metrics[cid] = m
        else:
            uplink += item.uplink_bytes
            try:
                if individual:
                    upd = pipeline.server(item, rctx)
                    if cohort is None:
                        validator.check(upd)
                    updates.append(upd)
                else:
                    acc.add(reducer(item))
            except FedgeError as exc:
                drop(item.client_id, f"rejected: {exc}")
                continue
            losses.append((item.metrics.get("train_loss", math.nan), float(item.num_examples)))
            client_metrics[item.client_id] = {
                **item.metrics,
                "num_examples": float(item.num_examples),
                "uplink_bytes": float(item.uplink_bytes),
            }

    aborted = ""
    if cohort is not None:
        try:
            terms, count, lost = cohort.sum_cohort(updates, rctx, transport)
            acc.add(terms, count=count)
            for reason, ids in lost.items():
                for cid in ids:
                    for c in blocks.get(cid, [cid]):
                        drop(c, reason)
        except AggregationError as exc:
            aborted = str(exc)
        updates = []
    n_ok = len(updates) if strategy.needs_individual_updates else acc.count
    record = RoundRecord(
        round=round_num,
        participants=n_ok,
        failed=sum(len(v) for v in dropped.values()),
        dropped=dropped,
        uplink_bytes=uplink,
    )
    config_bytes = sum(nbytes(v) for v in ins.config.values() if isinstance(v, list))
    if down is None and strategy.per_client_models:
        spec = validator.spec
        record.downlink_bytes = sum(4 * strategy.downlink_spec(spec, cid).total + config_bytes for cid in plan.train)
    elif down is None:
        record.downlink_bytes = len(plan.train) * (nbytes(state.params) + config_bytes)
    else:
        sent_bytes = {cid: down.bytes_per_client.get(cid, nbytes(state.params)) + config_bytes for cid in plan.train}
        record.downlink_bytes = sum(sent_bytes.values())
        for cid, b in sent_bytes.items():
            if cid in client_metrics:
                client_metrics[cid]["downlink_bytes"] = float(b)
    reported = [lw for lw in losses if not math.isnan(lw[0])]
    if influence is None:
        record.train_loss = _weighted(reported)
    elif reported:
        record.train_loss = float(np.median([loss for loss, _ in reported]))
        record.extra["client_reported_train_loss_median"] = record.train_loss
    record.extra["selected"] = len(selected)
    policy.finish(round_num, record, client_metrics)
    if n_ok < min_updates:
        record.extra["skipped"] = aborted or f"{n_ok} usable updates, need {min_updates}"
        record.wall_s = time.perf_counter() - t0
        return state, record
    metrics: Metrics
    if strategy.needs_individual_updates:
        state, metrics = strategy.aggregate_updates(state, updates)
    else:
        state, metrics = strategy.aggregate(state, pipeline.aggregate(acc.sums, rctx))
    record.extra.update(metrics)
    record.extra.update(rctx.info)
    record.wall_s = time.perf_counter() - t0
    return state, record


def check_pipeline(strategy: Strategy, pipeline: Pipeline) -> None:
    """Refuse a strategy that aggregates individual updates with a transform that acts on sums,
    and a strategy whose updates hold part of the model with a transform that needs all of it.

    The first never sees the summed terms, so a transform's ``aggregate`` (central DP
    noise, for one) would silently not happen: no noise, no ε. The second sends sub-models
    or the shared body only, which a codec decodes, and secure aggregation sums, against the
    whole model's shapes.
    """
    if strategy.partial_updates:
        whole = [t.name for t in pipeline.transforms if t.whole_model or isinstance(t, CohortSum)]
        if whole:
            raise ConfigError(
                f"strategy {strategy.name!r} sends part of the model per client, which {', '.join(whole)} "
                "cannot encode or sum; with it use clipping or DP noise only, or a whole-model strategy "
                "(fedavg, finetune, ditto) with compression or secure aggregation"
            )
    if not strategy.needs_individual_updates:
        return
    hiding = next((t for t in pipeline.transforms if isinstance(t, CohortSum)), None)
    if hiding is not None:
        raise ConfigError(
            f"strategy {strategy.name!r} needs individual updates, which {hiding.name} "
            "hides from the server; choose a strategy that aggregates sums"
        )
    on_sums = [
        t.name for t in pipeline.transforms if type(t).aggregate is not Transform.aggregate or isinstance(t, CohortSum)
    ]
    if on_sums:
        raise ConfigError(
            f"strategy {strategy.name!r} aggregates individual updates, so {', '.join(on_sums)}, "
            "which act on the summed updates, would do nothing; choose a strategy that aggregates sums"
        )


def run(
    *,
    strategy: Strategy,
    transport: Transport,
    initial_params: list[np.ndarray],
    rounds: int,
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
    """Run ``rounds`` rounds (continuing from ``state`` when resuming) and return the history.

    A :class:`RoundState` resumes the whole run: the strategy state, the transforms' states
    (the privacy accountant, so ε goes on from where it was) and the influence window go
    back into this run's (freshly built) pipeline and bound. A bare :class:`StrategyState`
    resumes the strategy only. The result's ``round_state`` is the state after the last round.

    ``influence`` bounds each client's weight and update norm relative to recent updates
    (:mod:`fedge.strategies.influence`); deployed runs use it, simulations by default not,
    so their results stay those of the papers. A deployed run passes its own
    :class:`InfluenceBound`, whose window it checkpoints.
    """
    if rounds < 0:
        raise AggregationError(f"rounds must be >= 0, got {rounds}")
    sampling = sampling or Sampling()
    train = train or TrainConfig()
    pipeline = pipeline if pipeline is not None else Pipeline()
    check_pipeline(strategy, pipeline)
    eval_plan = eval_plan or EvalPlan()
    state, bound, aggregator = start_run(
        strategy, transport, initial_params, pipeline, state, influence, max_update_norm=max_update_norm
    )
    steps = Steps(transport, rounds, evaluator, eval_plan, seed, callbacks, pipeline, bound)
    for cb in callbacks:
        cb.on_run_start(state, rounds)
    for round_num in range(state.round_num + 1, rounds + 1):
        t0 = time.perf_counter()
        state, record = run_round(
            round_num=round_num,
            state=state,
            strategy=strategy,
            transport=transport,
            sampling=sampling,
            train=train,
            aggregator=aggregator,
            seed=seed,
            min_updates=min_updates,
            policy=policy,
        )
        state.round_num = round_num
        steps.evaluate(record, round_num, state)
        if not steps.publish(record, state, t0):
            break
    return steps.result(state)


def start_run(
    strategy: Strategy,
    transport: Transport,
    initial_params: list[np.ndarray],
    pipeline: Pipeline,
    state: RoundState | StrategyState | None,
    influence: InfluenceLimits | InfluenceBound | None,
    *,
    max_update_norm: float | None,
) -> tuple[StrategyState, InfluenceBound | None, Aggregator]:
    """What both engines start a run from: the strategy state (fresh, or restored with the transforms'
    states and the influence window from a :class:`RoundState`), the influence bound and the run's
    :class:`Aggregator`."""
    bound = InfluenceBound(influence) if isinstance(influence, InfluenceLimits) else influence
    if isinstance(state, RoundState):
        state = state.restore(pipeline, bound)
    elif state is None:
        state = strategy.init(
            [np.asarray(p, dtype=np.float32) for p in initial_params], num_clients=transport.num_clients()
        )
    aggregator = Aggregator.for_run(
        strategy, pipeline, ParamSpec.of(state.params), max_update_norm=max_update_norm, bound=bound
    )
    return state, bound, aggregator


class Steps:
    """What a run keeps from step to step (a round, or an asynchronous engine's applied step):
    the history, the clients' accuracies, the last :class:`RoundState` and why a callback stopped
    it. Both engines evaluate, record and call back through it, the same way."""

    def __init__(
        self,
        transport: Transport,
        rounds: int,
        evaluator: Evaluator | None,
        eval_plan: EvalPlan,
        seed: int,
        callbacks: Sequence[Callback],
        pipeline: Pipeline,
        bound: InfluenceBound | None,
    ) -> None:
        self.transport, self.rounds, self.evaluator, self.eval_plan = transport, rounds, evaluator, eval_plan
        self.seed, self.callbacks, self.pipeline, self.bound = seed, callbacks, pipeline, bound
        self.history = History()
        self.client_acc: dict[int, float] = {}
        self.round_state: RoundState | None = None
        self.stopped: str | None = None

    def evaluate(self, record: RoundRecord, step: int, state: StrategyState) -> None:
        """Central and federated evaluation of step ``step`` when the plan asks for it (and at the last)."""
        due = step % self.eval_plan.every == 0 or step == self.rounds
        if self.evaluator is not None and due:
            record.test_loss, record.test_accuracy = self.evaluator(state.params)
        if self.eval_plan.federated_clients and due:
            results = federated_evaluate(self.transport, step, state, self.eval_plan, self.seed)
            self.client_acc.update({r.client_id: r.accuracy for r in results})
            if results:
                record.fed_test_loss = _weighted([(r.loss, r.num_examples) for r in results])
                record.fed_test_accuracy = _weighted([(r.accuracy, r.num_examples) for r in results])
                record.extra.update(client_distribution(results))

    def publish(self, record: RoundRecord, state: StrategyState, started: float) -> bool:
        """Record the step and hand it to every callback; False when one of them stopped the run."""
        record.wall_s = time.perf_counter() - started
        self.history.append(record)
        self.round_state = RoundState.capture(state, self.pipeline, self.bound)
        try:
            for cb in self.callbacks:
                cb.on_round_state(record, self.round_state)
                cb.on_round_end(record, state)
        except StopRun as exc:
            self.stopped = str(exc)
            return False
        return True

    def result(self, state: StrategyState) -> RunResult:
        """End every callback and return the run's result."""
        for cb in self.callbacks:
            cb.on_run_end(self.history, state)
        return RunResult(
            history=self.history,
            state=state,
            stopped_early=self.stopped,
            client_accuracy=self.client_acc,
            round_state=self.round_state or RoundState.capture(state, self.pipeline, self.bound),
        )


WORST_FRACTION = 0.1
"""The share of clients whose mean accuracy is reported as the worst-case figure."""


def worst_mean(values: Sequence[float], fraction: float = WORST_FRACTION) -> float:
    """Mean of the lowest ``ceil(fraction * n)`` values (at least one); NaN when empty."""
    if not values:
        return math.nan
    k = max(1, math.ceil(fraction * len(values)))
    return float(np.mean(np.sort(np.asarray(values, dtype=np.float64))[:k]))


def client_distribution(results: Sequence[EvalResult]) -> Metrics:
    """Per-client accuracy distribution of a federated evaluation: the mean over clients and the
    mean of the worst 10 %, for the global model and, when clients report one, their personal model."""
    acc = [r.accuracy for r in results]
    out: Metrics = {"client_acc_mean": float(np.mean(acc)), "client_acc_worst10": worst_mean(acc)}
    personal = [r.metrics["personal_accuracy"] for r in results if "personal_accuracy" in r.metrics]
    if personal:
        out["personal_acc_mean"] = float(np.mean(personal))
        out["personal_acc_worst10"] = worst_mean(personal)
    return out


def federated_evaluate(
    transport: Transport, round_num: int, state: StrategyState, plan: EvalPlan, seed: int
) -> list[EvalResult]:
    ids = transport.available(round_num)
    if plan.federated_clients > 0 and plan.federated_clients < len(ids):
        rng = np.random.default_rng([seed, round_num, 0xE7A1])
        ids = sorted(int(i) for i in rng.choice(ids, size=plan.federated_clients, replace=False))
    return [r for r in transport.evaluate(round_num, ids, state.params) if isinstance(r, EvalResult)]
