"""The ``auto`` backend (the default): picks sequential, vectorized or processes for each round's cohort.

The choice looks at what a round really costs (the measured figures are in
``docs/engine.md``): one batched ``vmap`` step costs several sequential steps of a small
model, so batching pays only for buckets of several clients with similar schedules; the
built-in logreg and MLP train through a NumPy kernel whose step costs tens of
microseconds, so for them batching pays only where the per-client work around training
outweighs it (schedules of a few steps); a worker process pays only when the per-client
work outweighs shipping the share. The rules, in order:

1. one client in the cohort: ``sequential`` (nothing to batch or share out);
2. a strategy that gives each client its own model: ``processes`` with two cores or more,
   else ``sequential`` (the batched pass starts every client from one model);
3. a built-in dense model (a :class:`~fedge.clients.torch_learner.TorchLearner` with a
   dense kernel): ``vectorized`` when the cohort's mean schedule is at most
   :data:`KERNEL_BATCH_STEPS` steps, at least half of its steps fall into batched buckets
   and its config batches (no momentum, weight decay, anchor or frozen tensors), else
   ``sequential``;
4. another PyTorch model the vectorized backend can batch: ``vectorized`` when at least
   half of the cohort's local steps fall into batched buckets (:func:`plan_buckets`); a
   cohort too small or too ragged for that goes to ``processes`` with two cores or more and
   at least two clients per core, else ``sequential``;
5. a PyTorch model it cannot batch (buffers, momentum): ``processes`` with two cores or
   more and at least two clients per core, else ``sequential``;
6. anything else (the NumPy learners): ``sequential``.

A custom ``Client`` or ``Learner`` (anything but a plain :class:`LearnerClient` of a
``TorchLearner`` or a NumPy learner) always runs ``sequential``, checked before rules 3–6:
it may have side effects its user relies on (appending to a list, writing a file), which
in a worker would happen in another process, and a batched pass would skip its own code.
``debug`` is never picked: it stops the run at the first failing client, which a default
must not. The pick and its one-line reason are in each round's record (``backend``,
``backend_reason``) and logged whenever they change.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from fedge.clients.base import LearnerClient, step_budget
from fedge.clients.numpy_models import NumpyLogReg, NumpyMLP
from fedge.core.params import ParamSpec
from fedge.core.types import TrainConfig
from fedge.simulation.backends.processes import ProcessesBackend, default_workers
from fedge.simulation.backends.vectorized import (
    MAX_WASTE,
    MIN_BATCH,
    VectorizedBackend,
    client_config,
    config_unsupported,
    plan_buckets,
    unsupported,
)
from fedge.transport.base import FitResult
from fedge.transport.inprocess import Backend, FitTask, SequentialBackend

log = logging.getLogger(__name__)

BATCHED_SHARE = 0.5
"""The share of a cohort's local steps that must fall into batched buckets for ``vectorized``."""
KERNEL_BATCH_STEPS = 4.0
"""The longest mean schedule (local steps per client) at which ``vectorized`` beats the dense
kernel run client by client. Measured on 2 cores (docs/engine.md): W2's clients (2 steps)
run 3.5× faster batched; the default digits run's (10 steps) 4× faster client by client."""


def batched_share(steps: Sequence[int], *, max_waste: float = MAX_WASTE, min_batch: int = MIN_BATCH) -> float:
    """The share of ``steps`` (one schedule length per client) the vectorized backend would batch."""
    total = sum(steps)
    if total <= 0:
        return 0.0
    buckets = plan_buckets(steps, max_waste=max_waste, min_batch=min_batch)
    return sum(steps[i] for b in buckets if b.batched for i in b.members) / total


def choose(task: FitTask, cores: int) -> tuple[str, str]:
    """The backend for this round's cohort and why, in one line (the rules of the module docstring)."""
    ids, runtime = task.client_ids, task.runtime
    if len(ids) <= 1:
        return "sequential", f"{len(ids)} client in the round: nothing to batch or share out"
    probe = runtime.client_fn(ids[0])
    learner = getattr(probe, "learner", None)
    own = own_client(probe)
    if runtime.strategy.per_client_models:
        if cores >= 2 and own:
            return "processes", f"each client has its own model ({runtime.strategy.name}); {cores} cores"
        where = f"{cores} core(s)" if own else "a custom client stays in this process"
        return "sequential", f"each client has its own model ({runtime.strategy.name}); {where}"
    if not own:
        return "sequential", f"{type(probe).__name__} is a custom client: it runs in this process, as written"
    if "torch" not in sys.modules or not _is_torch(learner):
        what = type(learner or probe).__name__
        return "sequential", f"{what} is not a PyTorch model: steps are too cheap to batch or share out"
    spec = ParamSpec.of(task.params)
    why = unsupported(probe, spec)
    state = task.states.get(ids[0], {})
    cfg = client_config(runtime, task.ins, runtime.context(ids[0], task.round_num, dict(state)))
    if why is None:
        why = config_unsupported(cfg)
    steps = [_steps(runtime.client_fn(cid), cfg, task.ins.per_client.get(cid)) for cid in ids]
    if getattr(learner, "kernel", None) is not None:
        mean = sum(steps) / len(steps)
        if why is None and mean <= KERNEL_BATCH_STEPS and batched_share(steps) >= BATCHED_SHARE:
            return "vectorized", f"{len(ids)} clients of {mean:.1f} steps: batching beats the dense kernel"
        return "sequential", f"dense kernel, {mean:.1f} steps per client: cheaper client by client than batched"
    share_out = cores >= 2 and len(ids) >= 2 * cores
    if why is not None:
        if share_out:
            return "processes", f"not batchable ({why}); {len(ids)} clients on {cores} cores"
        return "sequential", f"not batchable ({why}); {len(ids)} clients on {cores} core(s)"
    share = batched_share(steps)
    if share >= BATCHED_SHARE:
        return "vectorized", f"{len(ids)} PyTorch clients, {share:.0%} of their steps batch with bounded padding"
    target = "processes" if share_out else "sequential"
    if len(ids) < MIN_BATCH:
        return target, f"{len(ids)} clients are too few to batch; {cores} core(s)"
    return target, f"schedules too ragged to batch ({share:.0%} of steps would batch); {cores} core(s)"


def own_client(client: Any) -> bool:
    """Whether ``client`` runs only fedge's code: a plain :class:`LearnerClient` of fedge's learners.

    Only such clients may be moved into a batched pass or worker processes by ``auto``.
    """
    if type(client) is not LearnerClient:
        return False
    learner = client.learner
    return type(learner) in (NumpyMLP, NumpyLogReg) or (_is_torch(learner) and type(learner).train is _torch_train())


def _is_torch(learner: Any) -> bool:
    if "fedge.clients.torch_learner" not in sys.modules:
        return False
    from fedge.clients.torch_learner import TorchLearner

    return isinstance(learner, TorchLearner)


def _torch_train() -> Any:
    from fedge.clients.torch_learner import TorchLearner

    return TorchLearner.train


def _steps(client: Any, cfg: TrainConfig, override: dict[str, Any] | None) -> int:
    """A client's local step count: epochs × batches per epoch, within its ``max_steps``."""
    if not isinstance(client, LearnerClient):
        return 1
    if override:
        cfg = replace(cfg, **override)
    return step_budget(cfg, client.data.num_train)[1]


class AutoBackend:
    """Runs each round on the backend :func:`choose` picks (see the module docstring)."""

    name = "auto"

    def __init__(self, cores: int | None = None) -> None:
        self.cores = cores if cores is not None else default_workers()
        if "fork" not in mp.get_all_start_methods():
            self.cores = 1  # the processes backend needs fork()
        self._engine: Any = None
        self._backends: dict[str, Backend] = {}
        self.choice: tuple[str, str] | None = None
        """The last round's pick and its reason."""

    def configure(self, engine: Any) -> None:
        """Take options from the ``[engine]`` config section (passed on to the backends it runs)."""
        self._engine = engine
        for backend in self._backends.values():
            if hasattr(backend, "configure"):
                backend.configure(engine)

    def backend(self, name: str) -> Backend:
        """The backend ``name``, built on first use and kept for the run."""
        if name not in self._backends:
            made: Backend
            if name == "vectorized":
                made = VectorizedBackend()
            elif name == "processes":
                made = ProcessesBackend(workers=self.cores)
            else:
                made = SequentialBackend()
            if self._engine is not None and hasattr(made, "configure"):
                made.configure(self._engine)
            self._backends[name] = made
        return self._backends[name]

    @property
    def round_info(self) -> dict[str, Any]:
        """The last round's pick, its reason and the chosen backend's own figures."""
        if self.choice is None:
            return {}
        name, why = self.choice
        info: dict[str, Any] = {"backend": name, "backend_reason": why}
        info.update(getattr(self._backends.get(name), "round_info", {}))
        return info

    def fit(self, task: FitTask) -> Iterator[FitResult]:
        choice = choose(task, self.cores)
        if choice != self.choice:
            log.info("auto backend: round %d runs on %s: %s", task.round_num, *choice)
        self.choice = choice
        yield from self.backend(choice[0]).fit(task)

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
