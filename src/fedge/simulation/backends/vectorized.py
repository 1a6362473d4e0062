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

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.clients.base import ClientData, LearnerClient, TrainResult, batches, run_fit, step_budget
from fedge.core.errors import ConfigError
from fedge.core.params import Params, ParamSpec
from fedge.core.types import ClientContext, ClientUpdate, EvalResult, FitInstructions, TrainConfig
from fedge.engine.aggregator import ClientFailure
from fedge.simulation.backends._shard import PartialReducer, fit_one
from fedge.transport.base import FitResult
from fedge.transport.inprocess import ClientRuntime, FitTask

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """One client prepared for batched training."""

    client: LearnerClient
    ctx: ClientContext
    cfg: TrainConfig
    batches: list[npt.NDArray[np.intp]]


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
    cfg = runtime.strategy.client_prepare(ins, ctx)
    if ctx.client_id in ins.per_client:
        cfg = replace(cfg, **ins.per_client[ctx.client_id])
    return cfg


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


def train_cohort(module: Any, params: Params, jobs: Sequence[_Job]) -> list[TrainResult]:
    """Train ``jobs`` (same model, same batch size) in lock-step; one result per job."""
    import torch
    from torch.func import functional_call, grad, vmap

    k = len(jobs)
    bsz = jobs[0].cfg.batch_size
    datas: list[ClientData] = [j.client.data for j in jobs]
    sizes = [d.num_train for d in datas]
    n_max = max(max(sizes), 1)
    t_max = max((len(j.batches) for j in jobs), default=0)
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
    names = [name for name, _ in module.named_parameters()]
    shape_k = [(k,) + (1,) * p.ndim for p in params]
    glob = [torch.from_numpy(np.ascontiguousarray(p)) for p in params]
    theta = [g.unsqueeze(0).repeat(k, *([1] * g.ndim)) for g in glob]
    lr = torch.tensor([j.cfg.lr for j in jobs], dtype=torch.float32)
    mu = torch.tensor([j.cfg.prox_mu for j in jobs], dtype=torch.float32)
    use_prox = bool(mu.any())
    corr: list[torch.Tensor] | None = None
    if any(j.cfg.grad_correction is not None for j in jobs):
        corr = [
            torch.from_numpy(
                np.stack(
                    [
                        np.asarray(j.cfg.grad_correction[m], dtype=np.float32)
                        if j.cfg.grad_correction is not None
                        else np.zeros(p.shape, np.float32)
                        for j in jobs
                    ]
                )
            )
            for m, p in enumerate(params)
        ]
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
    seen = mask.sum(axis=(1, 2))
    out_params = [t.numpy() for t in theta]
    return [
        TrainResult(
            params=[p[i] for p in out_params],
            steps=len(j.batches),
            loss=float(loss_sum[i]) / max(float(seen[i]), 1.0),
            num_examples=sizes[i],
        )
        for i, j in enumerate(jobs)
    ]


class VectorizedBackend:
    """Train each chunk of the cohort as one batched computation (see module docstring)."""

    name = "vectorized"

    def __init__(self, chunk: int = 2048, *, max_waste: float = MAX_WASTE, min_batch: int = MIN_BATCH) -> None:
        self.chunk = chunk
        self.max_waste = max_waste
        self.min_batch = min_batch
        self._round: dict[str, int] = dict.fromkeys(("padded_steps", "real_steps", "batched_clients", "buckets"), 0)
        self._reported: set[str] = set()
        self._checked: dict[tuple[int, ParamSpec], str | None] = {}

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
        key = (id(learner), spec)
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
            ):
                if part is None:
                    yield item
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
    ) -> Iterator[ClientUpdate | ClientFailure]:
        groups: dict[tuple[int, int], list[_Job]] = {}
        for cid in ids:
            state = states.setdefault(cid, {})
            try:
                client = runtime.client_fn(cid)
                reason = self._unsupported(client, spec)
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
        for jobs in groups.values():
            for bucket in plan_buckets(
                [len(j.batches) for j in jobs], max_waste=self.max_waste, min_batch=self.min_batch
            ):
                members = [jobs[i] for i in bucket.members]
                if not bucket.batched:
                    for job in members:
                        yield fit_one(runtime, job.client.client_id, params, ins, job.ctx.state)
                    continue
                real = sum(len(j.batches) for j in members)
                self._round["real_steps"] += real
                self._round["padded_steps"] += bucket.steps * len(members) - real
                self._round["batched_clients"] += len(members)
                self._round["buckets"] += 1
                yield from self._train_group(runtime, params, ins, members)

    def _train_group(
        self, runtime: ClientRuntime, params: Params, ins: FitInstructions, jobs: list[_Job]
    ) -> Iterator[ClientUpdate | ClientFailure]:
        learner: Any = jobs[0].client.learner
        try:
            results = train_cohort(learner.module, params, jobs)
        except Exception as exc:
            self._fallback(f"batched training failed ({type(exc).__name__}: {exc})")
            for job in jobs:
                yield fit_one(runtime, job.client.client_id, params, ins, job.ctx.state)
            return
        for job, result in zip(jobs, results, strict=True):
            try:
                yield run_fit(
                    _Trained(job.client, result),
                    params,
                    ins,
                    job.ctx,
                    strategy=runtime.strategy,
                    pipeline=runtime.pipeline,
                )
            except Exception as exc:
                yield ClientFailure(job.client.client_id, "fit", f"{type(exc).__name__}: {exc}")
