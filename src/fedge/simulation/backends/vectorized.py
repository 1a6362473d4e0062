"""The ``vectorized`` backend: a cohort of same-architecture PyTorch clients in lock-step.

Every client keeps its own parameters along a leading cohort axis, and one step of local
SGD for the whole cohort is one batched call of
``vmap(grad(loss ∘ functional_call(module)))`` (the per-example-gradient recipe of
``torch.func``, here with one "example" per client; Horace He and Richard Zou, functorch,
2021). The step reproduces each client's sequential training exactly:

* the same mini-batches: each client's index permutations are drawn from its own
  generator, in the order :class:`~fedge.clients.torch_learner.TorchLearner` draws them;
* the same loss: ragged batches and datasets are padded, the per-sample loss is masked
  and divided by the real batch size, so each client's gradient is its own batch mean;
* the same update: FedProx's ``mu (w - w_global)`` and SCAFFOLD's ``c - c_i`` are added
  per client, and a client whose step budget is spent is masked out of later steps.

Lock-step padding is bounded: :func:`plan_buckets` groups the cohort into buckets of similar
schedule length (at most :data:`MAX_WASTE` of a bucket's client-steps are padding), and a
bucket too small to repay a batched pass runs per client. Each round's padding is in
:attr:`VectorizedBackend.round_info`.

Everything around training (strategy hooks, pipeline transforms, the reducer) runs per
client through :func:`~fedge.clients.base.run_fit`, unchanged. A client that cannot be
vectorised (a custom ``Client``, a non-torch learner, momentum or weight decay, a model
with buffers, a model that does not match the global parameters) runs sequentially, and
the reason is logged once. Strategies that give each client its own model
(``per_client_models``: FedPer, FedRep, HeteroFL) are refused; Ditto's global model is
batched and its personal model trained per client after it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.clients.base import ClientData, LearnerClient, TrainResult, batches, overridden, run_fit, step_budget
from fedge.core import streams
from fedge.core.errors import ConfigError
from fedge.core.params import Params, ParamSpec
from fedge.core.types import ClientContext, ClientUpdate, EvalResult, FitInstructions, TrainConfig
from fedge.data.federated import shared_rows
from fedge.engine.aggregator import ClientFailure, PartialSum, Reducer
from fedge.simulation.backends._shard import PartialReducer, fit_one
from fedge.strategies.base import Strategy
from fedge.transport.base import FitResult
from fedge.transport.inprocess import ClientRuntime, FitTask

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """One client prepared for batched training: its ``steps`` mini-batches, listed (``planned``)
    or cut when first asked for from the epochs' permutations drawn in a batch (``orders``)."""

    client: LearnerClient
    ctx: ClientContext
    cfg: TrainConfig
    planned: list[npt.NDArray[np.intp]] | None
    orders: npt.NDArray[np.int64] | None = None
    steps: int = 0

    def __post_init__(self) -> None:
        if self.planned is not None:
            self.steps = len(self.planned)

    @property
    def batches(self) -> list[npt.NDArray[np.intp]]:
        if self.planned is None:
            assert self.orders is not None
            bsz, n = self.cfg.batch_size, self.orders.shape[1]
            self.planned = [order[lo : lo + bsz] for order in self.orders for lo in range(0, n, bsz)][: self.steps]
        return self.planned


class _Trained:
    """A client whose training already happened in the batch: the first ``train`` hands the
    result back; any further training in the same round (Ditto's personal model) runs on the
    real client, sequentially."""

    def __init__(self, client: LearnerClient, result: TrainResult) -> None:
        self.client_id = client.client_id
        self._client = client
        self._result: TrainResult | None = result

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        if self._result is None:
            return self._client.train(params, cfg, ctx)
        result, self._result = self._result, None
        return result

    def loss(self, params: Params) -> float:
        return self._client.loss(params)

    def evaluate(self, params: Params) -> EvalResult:
        return self._client.evaluate(params)


def client_config(runtime: ClientRuntime, ins: FitInstructions, ctx: ClientContext) -> TrainConfig:
    """The config :func:`run_fit` will train this client with."""
    return overridden(runtime.strategy.client_prepare(ins, ctx), ins, ctx.client_id)


def unsupported(client: Any, spec: ParamSpec) -> str | None:
    """Why ``client`` cannot join a batched cohort, or ``None`` when it can."""
    from fedge.clients.torch_learner import TorchLearner

    if type(client) is not LearnerClient:  # a subclass's own train() would be bypassed
        return f"client type {type(client).__name__} is not a plain LearnerClient"
    learner = client.learner
    if not isinstance(learner, TorchLearner) or type(learner).train is not TorchLearner.train:
        return f"learner {type(learner).__name__} is not a plain TorchLearner"
    if learner.loss:
        return f"custom loss {learner.loss} is not vectorised"
    module = learner.module
    if any(True for _ in module.buffers()):
        return f"model {type(module).__name__} has buffers (e.g. BatchNorm statistics)"
    shapes = tuple(tuple(p.shape) for p in module.parameters())
    if shapes != spec.shapes:
        return "model parameters do not match the global model's shapes"
    return None


def config_unsupported(cfg: TrainConfig) -> str | None:
    if cfg.momentum or cfg.weight_decay:
        return "local SGD momentum / weight decay are not vectorised"
    if cfg.anchor is not None or cfg.frozen:
        return "a proximal anchor or frozen tensors are not vectorised"
    return None


def plan_batches(n: int, cfg: TrainConfig, rng: np.random.Generator) -> list[npt.NDArray[np.intp]]:
    """The mini-batches a client trains on, drawn exactly as ``TorchLearner.train`` draws them."""
    epochs, max_steps = step_budget(cfg, n)
    out: list[npt.NDArray[np.intp]] = []
    for _ in range(epochs):
        if len(out) >= max_steps:
            break
        for idx in batches(n, cfg.batch_size, rng):
            if len(out) >= max_steps:
                break
            out.append(idx)
    return out


def permutations_drawn(cfg: TrainConfig, n: int) -> int:
    """How many epochs :func:`plan_batches` starts, i.e. how many permutations it draws (``n > 0``)."""
    epochs, max_steps = step_budget(cfg, n)
    per_epoch = -(-n // cfg.batch_size)
    return max(0, min(epochs, -(-max_steps // per_epoch)))


MIN_STREAMED = 16
"""Fewer clients of one size than this make their generators one by one (the batched draw
costs a fixed few hundred array operations per permutation)."""


class _Deferred(ClientContext):
    """A client context whose generator is made only if something asks for it, already
    advanced past the batch orders drawn for the client by :func:`fedge.core.streams.client_permutations`."""

    def __init__(self, client_id: int, round_num: int, state: dict[str, Any], make: Callable[[], Any]) -> None:
        self.client_id = client_id
        self.round_num = round_num
        self.state = state
        self._make = make

    def __getattr__(self, name: str) -> Any:
        if name != "rng":
            raise AttributeError(name)
        self.rng = self._make()
        return self.rng


def streamed_jobs(
    runtime: ClientRuntime,
    round_num: int,
    members: Sequence[tuple[LearnerClient, TrainConfig, dict[str, Any]]],
    n: int,
    count: int,
) -> list[_Job]:
    """Jobs for clients of ``n`` examples each, their batches cut from permutations drawn for all of them at once
    (one by one, as :func:`plan_batches` draws them, when they are too few to repay it)."""
    if len(members) < MIN_STREAMED:
        jobs = []
        for client, cfg, state in members:
            ctx = runtime.context(client.client_id, round_num, state)
            jobs.append(_Job(client, ctx, cfg, plan_batches(n, cfg, ctx.rng)))
        return jobs
    ids = [c.client_id for c, _, _ in members]
    drawn = streams.client_permutations(runtime.seed, round_num, ids, n, count)
    jobs = []
    budgets: dict[int, int] = {}  # steps by id(cfg)
    for i, (client, cfg, state) in enumerate(members):
        steps = budgets.get(id(cfg), -1)
        if steps < 0:
            steps = budgets[id(cfg)] = min(step_budget(cfg, n)[1], count * -(-n // cfg.batch_size))
        make = functools.partial(drawn.generator, i, runtime.seed, round_num, client.client_id)
        ctx = _Deferred(client.client_id, round_num, state, make)
        jobs.append(_Job(client, ctx, cfg, None, drawn.permutations[i], steps))
    return jobs


MAX_WASTE = 0.25
"""The most a batched bucket may pad: padded client-steps over all client-steps it computes."""

MIN_BATCH = 6
"""A bucket is batched when its real work is at least this many clients' worth of its longest
schedule; a smaller one runs per client (one batched step costs several sequential ones)."""


@dataclass(frozen=True)
class Bucket:
    """Clients trained together: ``members`` index the planned jobs, ``steps`` is the longest
    schedule among them, ``batched`` says whether they run in lock-step or one by one."""

    members: tuple[int, ...]
    steps: int
    batched: bool


def plan_buckets(steps: Sequence[int], *, max_waste: float = MAX_WASTE, min_batch: int = MIN_BATCH) -> list[Bucket]:
    """Group clients of similar schedule length so that lock-step padding stays bounded.

    Clients are taken longest schedule first; a bucket grows while its padded steps (each
    member padded to the bucket's longest) stay at most ``max_waste`` of the client-steps it
    computes, so the round's waste is bounded by ``max_waste`` too. A bucket whose real
    steps are fewer than ``min_batch`` times its longest schedule (few clients, or one long
    client alone) is not worth a batched pass and runs per client.
    """
    order = sorted(range(len(steps)), key=lambda i: (-int(steps[i]), i))
    out: list[Bucket] = []
    i = 0
    while i < len(order):
        top, real, j = int(steps[order[i]]), 0, i
        while j < len(order):
            k, s = j - i + 1, int(steps[order[j]])
            if top * k - (real + s) > max_waste * top * k:
                break
            real, j = real + s, j + 1
        out.append(Bucket(tuple(order[i:j]), top, real >= min_batch * top and j - i > 1))
        i = j
    return out


@dataclass
class _Packed:
    """A bucket's data and schedules as padded arrays: client ``i``'s step ``t`` trains on rows
    ``idx[i, t]`` of ``x[i]`` where ``mask[i, t]`` is 1."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    idx: npt.NDArray[np.int64]
    mask: npt.NDArray[np.float32]
    sizes: list[int]


def pack(jobs: Sequence[_Job]) -> _Packed:
    datas: list[ClientData] = [j.client.data for j in jobs]
    sizes = [d.num_train for d in datas]
    first = jobs[0]
    if first.orders is not None and all(
        j.orders is not None and j.orders.shape == first.orders.shape and j.steps == first.steps for j in jobs
    ):
        return pack_equal(jobs, datas)
    k = len(jobs)
    bsz = first.cfg.batch_size
    n_max = max(max(sizes), 1)
    t_max = max((j.steps for j in jobs), default=0)
    feat = np.asarray(datas[0].x_train).shape[1:]
    x_pad = np.zeros((k, n_max, *feat), dtype=np.float32)
    y_pad = np.zeros((k, n_max), dtype=np.int64)
    idx = np.zeros((k, max(t_max, 1), bsz), dtype=np.int64)
    mask = np.zeros((k, max(t_max, 1), bsz), dtype=np.float32)
    for i, (d, j) in enumerate(zip(datas, jobs, strict=True)):
        x_pad[i, : sizes[i]] = d.x_train
        y_pad[i, : sizes[i]] = d.y_train
        for t, b in enumerate(j.batches):
            idx[i, t, : len(b)] = b
            mask[i, t, : len(b)] = 1.0
    return _Packed(x_pad, y_pad, idx, mask, sizes)


def pack_equal(jobs: Sequence[_Job], datas: Sequence[ClientData]) -> _Packed:
    """:func:`pack` for clients of one size whose batches were cut from drawn permutations
    (:func:`streamed_jobs`): the same arrays, built with whole-cohort operations."""
    orders = np.stack([j.orders for j in jobs if j.orders is not None])
    k, count, n = orders.shape
    bsz, steps = jobs[0].cfg.batch_size, jobs[0].steps
    per_epoch = -(-n // bsz)
    idx = np.zeros((k, count, per_epoch * bsz), dtype=np.int64)
    mask = np.zeros((k, count, per_epoch * bsz), dtype=np.float32)
    idx[:, :, :n] = orders
    mask[:, :, :n] = 1.0
    idx = idx.reshape(k, count * per_epoch, bsz)[:, : max(steps, 1)]
    mask = mask.reshape(k, count * per_epoch, bsz)[:, : max(steps, 1)]
    if steps == 0:
        mask = np.zeros_like(mask)
    shared = shared_rows(datas)
    if shared is not None:  # one gather from the federation's arrays, not one per client and a stack
        src, rows = shared
        x = np.asarray(src.x[rows], dtype=np.float32)
        y = np.asarray(src.y[rows], dtype=np.int64)
    else:
        x = np.stack([np.asarray(d.x_train, dtype=np.float32) for d in datas])
        y = np.stack([np.asarray(d.y_train, dtype=np.int64) for d in datas])
    return _Packed(x, y, np.ascontiguousarray(idx), np.ascontiguousarray(mask), [n] * k)


def corrections(params: Params, jobs: Sequence[_Job]) -> list[npt.NDArray[np.float32]] | None:
    """SCAFFOLD's per-client gradient corrections stacked along the cohort axis (None: no client has one)."""
    if all(j.cfg.grad_correction is None for j in jobs):
        return None
    return [
        np.stack(
            [
                np.asarray(j.cfg.grad_correction[m], dtype=np.float32)
                if j.cfg.grad_correction is not None
                else np.zeros(p.shape, np.float32)
                for j in jobs
            ]
        )
        for m, p in enumerate(params)
    ]


def results(jobs: Sequence[_Job], packed: _Packed, stacked: Sequence[Any], loss_sum: Any) -> list[TrainResult]:
    """One :class:`TrainResult` per job from the bucket's stacked parameters and summed losses."""
    seen = packed.mask.sum(axis=(1, 2))
    return [
        TrainResult(
            params=[p[i] for p in stacked],
            steps=j.steps,
            loss=float(loss_sum[i]) / max(float(seen[i]), 1.0),
            num_examples=packed.sizes[i],
        )
        for i, j in enumerate(jobs)
    ]


def train_dense(kernel: Any, params: Params, jobs: Sequence[_Job]) -> tuple[_Packed, list[Any], Any]:
    """Train ``jobs`` of a built-in dense model in lock-step with its NumPy kernel: the bucket's
    packed arrays, the stacked parameters and the summed losses."""
    packed = pack(jobs)
    lr = np.asarray([j.cfg.lr for j in jobs], dtype=np.float32)
    mu = np.asarray([j.cfg.prox_mu for j in jobs], dtype=np.float32)
    stacked, loss = kernel.train_stacked(
        params, packed.x, packed.y, packed.idx, packed.mask, lr, mu, corrections(params, jobs)
    )
    return packed, stacked, loss


def train_cohort(module: Any, params: Params, jobs: Sequence[_Job]) -> list[TrainResult]:
    """Train ``jobs`` (same model, same batch size) in lock-step; one result per job."""
    import torch
    from torch.func import functional_call, grad, vmap

    packed = pack(jobs)
    k, t_max = len(jobs), packed.idx.shape[1]
    x_pad, y_pad, idx, mask = packed.x, packed.y, packed.idx, packed.mask
    names = [name for name, _ in module.named_parameters()]
    shape_k = [(k,) + (1,) * p.ndim for p in params]
    glob = [torch.from_numpy(np.ascontiguousarray(p)) for p in params]
    theta = [g.unsqueeze(0).repeat(k, *([1] * g.ndim)) for g in glob]
    lr = torch.tensor([j.cfg.lr for j in jobs], dtype=torch.float32)
    mu = torch.tensor([j.cfg.prox_mu for j in jobs], dtype=torch.float32)
    use_prox = bool(mu.any())
    stacked_corr = corrections(params, jobs)
    corr = None if stacked_corr is None else [torch.from_numpy(c) for c in stacked_corr]
    xt, yt = torch.from_numpy(x_pad), torch.from_numpy(y_pad)
    idx_t, mask_t = torch.from_numpy(idx), torch.from_numpy(mask)
    rows = torch.arange(k).unsqueeze(1)
    loss_fn = torch.nn.functional.cross_entropy

    def batch_loss(
        ps: tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor, m: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = functional_call(module, dict(zip(names, ps, strict=True)), (x,))
        total = (loss_fn(out, y, reduction="none") * m).sum()
        return total / m.sum().clamp(min=1.0), total

    step = vmap(grad(batch_loss, has_aux=True))
    loss_sum = torch.zeros(k, dtype=torch.float64)
    module.train()
    with torch.no_grad():
        for t in range(t_max):
            ib, mb = idx_t[:, t], mask_t[:, t]
            grads, totals = step(tuple(theta), xt[rows, ib], yt[rows, ib], mb)
            scale = lr * (mb.sum(dim=1) > 0).to(torch.float32)
            for m, g in enumerate(grads):
                if use_prox:
                    g = g + mu.view(shape_k[m]) * (theta[m] - glob[m])
                if corr is not None:
                    g = g + corr[m]
                theta[m].addcmul_(g, scale.view(shape_k[m]), value=-1.0)
            loss_sum += totals.to(torch.float64)
    return results(jobs, packed, [t.numpy() for t in theta], loss_sum.numpy())


def finish(
    runtime: ClientRuntime, job: _Job, result: TrainResult, params: Params, ins: FitInstructions
) -> ClientUpdate | ClientFailure:
    """A batched client's update from its training result, through the same ``run_fit`` as every backend."""
    try:
        return run_fit(
            _Trained(job.client, result), params, ins, job.ctx, strategy=runtime.strategy, pipeline=runtime.pipeline
        )
    except Exception as exc:
        return ClientFailure(job.client.client_id, "fit", f"{type(exc).__name__}: {exc}")


def summable(runtime: ClientRuntime, reducer: Reducer, ins: FitInstructions) -> bool:
    """Whether a batched bucket's updates can be validated and summed as arrays, skipping the
    per-client update objects: the engine's own reducer (not one that changes the decoded
    update, as a relay's re-basing one does), no pipeline transform, no influence bound, a strategy whose
    client side and contribution are FedAvg's (the delta from the model it was sent, weighted
    by :meth:`~fedge.strategies.base.Strategy.weight`), whole-model updates."""
    strategy = type(runtime.strategy)
    return (
        type(reducer) is Reducer
        and len(runtime.pipeline) == 0
        and len(reducer.pipeline) == 0
        and reducer.bound is None
        and reducer.validator.expected is None
        and not ins.config.get("report_initial_loss")
        and all(
            getattr(strategy, hook) is getattr(Strategy, hook)
            for hook in ("client_params", "client_train", "client_finish", "contribution", "weight")
        )
    )


def weighted_sum(weights: npt.NDArray[np.float64], d: npt.NDArray[np.float32], chunk: int = 64) -> Any:
    """``sum_i weights[i] * d[i]`` in float64, as the per-client path accumulates it, converting
    ``chunk`` clients at a time rather than the whole stack (its float64 copy would be twice its size)."""
    acc = np.zeros(d.shape[1:], dtype=np.float64)
    for lo in range(0, len(weights), chunk):
        part = d[lo : lo + chunk].astype(np.float64)
        acc += np.tensordot(weights[lo : lo + chunk], part, axes=1)
    return acc


def sum_bucket(
    runtime: ClientRuntime,
    reducer: Reducer,
    params: Params,
    ins: FitInstructions,
    jobs: Sequence[_Job],
    packed: _Packed,
    stacked: Sequence[npt.NDArray[np.float32]],
    loss: npt.NDArray[np.float64],
) -> Iterator[ClientUpdate | ClientFailure | PartialSum]:
    """A :func:`summable` bucket's contribution as one :class:`PartialSum`.

    The checks are the :class:`~fedge.engine.aggregator.Validator`'s, on the stacked deltas:
    finite values and the norm bound. A client that fails them is handed back as its own
    update, so the round's reducer rejects it with the usual reason.
    """
    k = len(jobs)
    deltas = [np.subtract(w, p[None], dtype=np.float32) for w, p in zip(stacked, params, strict=True)]
    per_client = [tuple(range(1, d.ndim)) for d in deltas]  # any memory layout: no reshape, no copy
    ok = np.ones(k, dtype=bool)
    for d, axes in zip(deltas, per_client, strict=True):
        ok &= np.isfinite(d).all(axis=axes)
    max_norm = reducer.validator.max_norm
    if max_norm is not None:
        sq = sum(np.square(d, dtype=np.float64).sum(axis=axes) for d, axes in zip(deltas, per_client, strict=True))
        ok &= np.sqrt(sq) <= max_norm
    mean_loss = loss / np.maximum(packed.mask.sum(axis=(1, 2)), 1.0)
    for i in np.flatnonzero(~ok):
        job = jobs[int(i)]
        result = TrainResult(
            params=[p[i] for p in stacked],
            steps=job.steps,
            loss=float(mean_loss[i]),
            num_examples=packed.sizes[int(i)],
        )
        yield finish(runtime, job, result, params, ins)
    keep = np.flatnonzero(ok)
    if not len(keep):
        return
    examples = np.asarray(packed.sizes, dtype=np.float64)[keep]
    weights = examples if runtime.strategy.weighting == "examples" else np.ones(len(keep))
    nbytes = sum(int(np.prod(p.shape)) * 4 for p in params)
    every = len(keep) == k
    sums = [weighted_sum(weights, d if every else d[keep]) for d in deltas]
    yield PartialSum(
        terms={"delta": sums, "weight": [np.asarray([weights.sum()], dtype=np.float64)]},
        client_ids=[jobs[int(i)].client.client_id for i in keep],
        num_examples=int(examples.sum()),
        metrics=[
            {
                "train_loss": float(mean_loss[i]),
                "steps": float(jobs[int(i)].steps),
                "num_examples": float(packed.sizes[int(i)]),
                "uplink_bytes": float(nbytes),
            }
            for i in keep
        ],
        uplink_bytes=nbytes * len(keep),
    )


class VectorizedBackend:
    """Train each chunk of the cohort as one batched computation (see module docstring)."""

    name = "vectorized"

    def __init__(self, chunk: int = 2048, *, max_waste: float = MAX_WASTE, min_batch: int = MIN_BATCH) -> None:
        self.chunk = chunk
        self.max_waste = max_waste
        self.min_batch = min_batch
        self._round: dict[str, int] = dict.fromkeys(("padded_steps", "real_steps", "batched_clients", "buckets"), 0)
        self._reported: set[str] = set()
        self._checked: dict[tuple[int, type], str | None] = {}
        self._spec: ParamSpec | None = None
        """The global model's shapes the remembered checks were made against."""

    def configure(self, engine: Any) -> None:
        """Take options from the ``[engine]`` config section."""
        self.chunk = int(engine.vectorized_chunk)

    def close(self) -> None:
        self._checked.clear()

    def _unsupported(self, client: Any, spec: ParamSpec) -> str | None:
        """:func:`unsupported`, remembered per learner object (clients usually share one)."""
        learner = getattr(client, "learner", None)
        if not isinstance(client, LearnerClient) or learner is None:
            return unsupported(client, spec)
        if spec is not self._spec:
            if spec != self._spec:
                self._checked.clear()
            self._spec = spec
        key = (id(learner), type(client))  # a subclass's own train() must not be batched
        if key not in self._checked:
            self._checked[key] = unsupported(client, spec)
        return self._checked[key]

    def _fallback(self, reason: str) -> None:
        if reason not in self._reported:
            self._reported.add(reason)
            log.warning("vectorized backend: running some clients sequentially: %s", reason)

    @property
    def fallback_reasons(self) -> set[str]:
        """Why clients ran sequentially so far (each reason is logged once)."""
        return set(self._reported)

    @property
    def round_info(self) -> dict[str, Any]:
        """The last round's padding figures, for the round's record (``record.extra``)."""
        info = self._round
        done = info["padded_steps"] + info["real_steps"]
        return {
            "padded_steps": info["padded_steps"],
            "wasted_step_fraction": info["padded_steps"] / done if done else 0.0,
            "batched_clients": info["batched_clients"],
            "buckets": info["buckets"],
        }

    def fit(self, task: FitTask) -> Iterator[FitResult]:
        self._round = dict.fromkeys(("padded_steps", "real_steps", "batched_clients", "buckets"), 0)
        runtime, reducer, client_ids = task.runtime, task.reducer, task.client_ids
        if runtime.strategy.per_client_models:
            raise ConfigError(
                f"training.backend = 'vectorized' trains the whole cohort from one shared model, but strategy "
                f"{runtime.strategy.name!r} gives each client its own (a personal head or a sub-model); "
                "use 'sequential', 'debug', 'processes' or 'ray'"
            )
        spec = ParamSpec.of(task.params)
        for start in range(0, len(client_ids), max(self.chunk, 1)):
            part = PartialReducer(reducer) if reducer is not None else None
            for item in self._chunk(
                runtime,
                task.round_num,
                client_ids[start : start + self.chunk],
                task.params,
                task.ins,
                task.states,
                spec,
                reducer,
            ):
                if part is None:
                    yield item
                elif isinstance(item, PartialSum):
                    part.merge(item)
                else:
                    part.add(item)
            if part is not None and (part.ids or part.failures):
                yield part.result()

    def _chunk(
        self,
        runtime: ClientRuntime,
        round_num: int,
        ids: Sequence[int],
        params: Params,
        ins: FitInstructions,
        states: dict[int, dict[str, Any]],
        spec: ParamSpec,
        reducer: Reducer | None,
    ) -> Iterator[ClientUpdate | ClientFailure | PartialSum]:
        groups: dict[tuple[int, int], list[_Job]] = {}
        # Clients whose batch orders can be drawn for the whole group at once (fedge.core.streams):
        # their generators are used for nothing else, so none is made unless something asks.
        streamed = (
            reducer is not None
            and summable(runtime, reducer, ins)
            and type(runtime.strategy).client_prepare is Strategy.client_prepare
            and type(runtime).context is ClientRuntime.context
            and streams.available()
        )
        deferred: dict[tuple[int, int, int, int], list[tuple[LearnerClient, TrainConfig, dict[str, Any]]]] = {}
        epochs_drawn: dict[tuple[int, int], int] = {}  # by (id(cfg), n): most clients share the round's cfg
        for cid in ids:
            state = states.setdefault(cid, {})
            try:
                client = runtime.client_fn(cid)
                reason = self._unsupported(client, spec)
                if (
                    reason is None
                    and streamed
                    and isinstance(client, LearnerClient)
                    and getattr(client.learner, "kernel", None) is not None
                ):
                    cfg = overridden(ins.train, ins, cid)  # client_prepare is the base one: ins.train
                    reason = config_unsupported(cfg)
                    n = client.data.num_train
                    if reason is None and n > 1:
                        drawn = epochs_drawn.get((id(cfg), n))
                        if drawn is None:
                            drawn = epochs_drawn[(id(cfg), n)] = permutations_drawn(cfg, n)
                        key = (id(client.learner), cfg.batch_size, n, drawn)
                        deferred.setdefault(key, []).append((client, cfg, state))
                        continue
                if reason is None:
                    ctx = runtime.context(cid, round_num, state)
                    cfg = client_config(runtime, ins, ctx)
                    reason = config_unsupported(cfg)
            except Exception as exc:
                yield ClientFailure(cid, "fit", f"{type(exc).__name__}: {exc}")
                continue
            if reason is not None:
                self._fallback(reason)
                yield fit_one(runtime, cid, params, ins, state)
                continue
            assert isinstance(client, LearnerClient)
            job = _Job(client, ctx, cfg, plan_batches(client.data.num_train, cfg, ctx.rng))
            groups.setdefault((id(client.learner), cfg.batch_size), []).append(job)
        for (learner_id, bsz, n, count), same in deferred.items():
            groups.setdefault((learner_id, bsz), []).extend(streamed_jobs(runtime, round_num, same, n, count))
        for jobs in groups.values():
            for bucket in plan_buckets([j.steps for j in jobs], max_waste=self.max_waste, min_batch=self.min_batch):
                members = [jobs[i] for i in bucket.members]
                if not bucket.batched:
                    for job in members:
                        yield fit_one(runtime, job.client.client_id, params, ins, job.ctx.state)
                    continue
                real = sum(j.steps for j in members)
                self._round["real_steps"] += real
                self._round["padded_steps"] += bucket.steps * len(members) - real
                self._round["batched_clients"] += len(members)
                self._round["buckets"] += 1
                yield from self._train_group(runtime, params, ins, members, reducer)

    def _train_group(
        self,
        runtime: ClientRuntime,
        params: Params,
        ins: FitInstructions,
        jobs: list[_Job],
        reducer: Reducer | None,
    ) -> Iterator[ClientUpdate | ClientFailure | PartialSum]:
        learner: Any = jobs[0].client.learner
        kernel = getattr(learner, "kernel", None)
        try:
            if kernel is not None:
                packed, stacked, loss = train_dense(kernel, params, jobs)
                if reducer is not None and summable(runtime, reducer, ins):
                    yield from sum_bucket(runtime, reducer, params, ins, jobs, packed, stacked, loss)
                    return
                trained = results(jobs, packed, stacked, loss)
            else:
                trained = train_cohort(learner.module, params, jobs)
        except Exception as exc:
            self._fallback(f"batched training failed ({type(exc).__name__}: {exc})")
            for job in jobs:
                yield fit_one(runtime, job.client.client_id, params, ins, job.ctx.state)
            return
        for job, result in zip(jobs, trained, strict=True):
            yield finish(runtime, job, result, params, ins)
