"""Build and run a whole experiment from its configuration, and write its output folder.

The folder holds ``config.toml`` (resolved), ``metrics.jsonl`` and ``metrics.csv`` (one
row per round), ``model.npz`` and ``model.pt`` (PyTorch state dict, for torch models),
``partition.json`` (label histogram per client), ``summary.json``, and ``clients.json`` /
``labels.json`` (``{"0": "car-00", ...}``) when the data named its clients or labels. It is
written to a temporary sibling and renamed into place, so a failed run leaves nothing
half-written, and it never replaces a folder fedge did not write (:mod:`fedge.core.files`).
A run stopped by Ctrl-C or by a diverging loss keeps its finished rounds, marked
``"partial": true`` in ``summary.json``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.clients.base import Learner, LearnerClient
from fedge.config.schema import Experiment, to_dict, to_toml
from fedge.core.errors import ConfigError, FedgeError, ModelError
from fedge.core.files import OutputFolder, claim_output
from fedge.core.params import Params
from fedge.core.threads import apply_threads
from fedge.core.types import TrainConfig
from fedge.data.datasets import digits, synthetic
from fedge.data.federated import FederatedDataset
from fedge.data.names import mapping
from fedge.engine import Callback, EvalPlan, RoundPolicy, RunResult, StopRun, run
from fedge.models import build_learner
from fedge.personalization import bind_heterofl
from fedge.pipeline import Pipeline, Transform
from fedge.preflight import check_dataset, check_extras
from fedge.simulation.history import History, RoundRecord, write_csv, write_jsonl
from fedge.simulation.sampling import Sampling, training_sampling
from fedge.strategies import REGISTRY, build_strategy
from fedge.strategies.base import Strategy, StrategyState
from fedge.transport.inprocess import BACKENDS, Backend, ClientFn, InProcessTransport

# Other parts of fedge contribute pipeline transforms and callbacks built from their own
# config sections (privacy, compression, devices ...) through these hooks.
TransformFactory = Callable[[Experiment], Sequence[Transform]]
CallbackFactory = Callable[[Experiment, "Built"], Sequence[Callback]]
TRANSFORM_FACTORIES: list[TransformFactory] = []
CALLBACK_FACTORIES: list[CallbackFactory] = []
ClientWrapper = Callable[[Experiment, FederatedDataset, ClientFn], ClientFn]
CLIENT_WRAPPERS: list[ClientWrapper] = []
"""Wrap how clients are built (e.g. attack simulation turns some clients malicious)."""
PolicyFactory = Callable[[Experiment, "Built"], "RoundPolicy | None"]
POLICY_FACTORIES: list[PolicyFactory] = []


def load_dataset(exp: Experiment) -> FederatedDataset:
    d = exp.data
    if d.loader:
        from fedge.data.usercode_source import load_user_dataset

        return load_user_dataset(d.loader, num_clients=d.num_clients, seed=exp.seed, test_loader=d.test_loader)
    if d.dataset == "digits":
        return digits(
            num_clients=d.num_clients,
            scheme=d.partition,
            alpha=d.alpha,
            test_fraction=d.test_fraction,
            seed=exp.seed,
            shards_per_client=d.shards_per_client,
            exponent=d.powerlaw_exponent,
        )
    if d.dataset in ("synthetic", "synthetic-iid"):
        return synthetic(
            d.synthetic_alpha,
            d.synthetic_beta,
            num_clients=d.num_clients,
            iid=d.dataset == "synthetic-iid",
            test_fraction=d.test_fraction,
            seed=exp.seed,
        )
    from fedge.data.sources import load_source

    return load_source(d, seed=exp.seed)


def make_strategy(exp: Experiment) -> Strategy:
    s = exp.strategy
    cls = REGISTRY.get(s.name)
    if cls is None:
        return build_strategy(s.name)  # raises with the list of valid names
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in to_dict(s).items() if k != "name" and k in accepted}
    section = getattr(cls, "config_section", None)
    if section:
        kwargs.update({k: v for k, v in to_dict(exp.section(section)).items() if k in accepted})
    return build_strategy(s.name, **kwargs)


def make_backend(name: str) -> Backend:
    factory = BACKENDS.get(name)
    if factory is None:
        raise ConfigError(f"training.backend: unknown backend {name!r}; valid: {', '.join(sorted(BACKENDS))}")
    return factory()


@dataclass
class Built:
    """Everything an experiment is made of, ready to run."""

    exp: Experiment
    data: FederatedDataset
    learner: Learner
    strategy: Strategy
    pipeline: Pipeline
    transport: InProcessTransport
    initial: Params
    train: TrainConfig
    sampling: Sampling
    deployed: bool = False
    """Built for ``fedge serve``: the rounds run over gRPC, so simulation-only parts stay out."""


def check_model(learner: Learner, params: Params, data: FederatedDataset) -> None:
    """Fail early, with one line, when the model's output does not fit the labels."""
    try:
        learner.evaluate(params, data.x[:1], np.asarray([data.num_classes - 1], dtype=np.int64))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"model does not accept the data's {data.feature_shape} features: {exc}") from None


def build(exp: Experiment, *, dataset: FederatedDataset | None = None, deployed: bool = False) -> Built:
    """Load the data and build the model, strategy, pipeline and transport, checking that they fit.

    Applies ``[training] threads`` first (before PyTorch and the BLAS pools start working).
    """
    apply_threads(exp.training.threads, exp.training.backend)
    data = dataset or load_dataset(exp)
    learner = build_learner(
        exp.model.name,
        exp.model.framework,
        data.feature_shape,
        exp.model.num_classes or data.num_classes,
        exp.model.hidden,
        factory=exp.model.factory,
        loss=exp.training.loss,
    )
    initial = learner.init_params(exp.seed)
    apply_threads(exp.training.threads, exp.training.backend)  # PyTorch is loaded by now
    check_model(learner, initial, data)
    check_dataset(exp, learner, initial, data)
    strategy = make_strategy(exp)
    transforms = [t for f in TRANSFORM_FACTORIES for t in f(exp)]
    pipeline = Pipeline(transforms)
    t = exp.training
    train = TrainConfig(
        epochs=t.local_epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )
    sampling = training_sampling(t)

    def client_fn(cid: int) -> LearnerClient:
        return LearnerClient(cid, learner, data.client(cid))

    make_client: ClientFn = bind_heterofl(exp, data, strategy, client_fn, deployed=deployed)
    if strategy.per_client_models and t.backend == "vectorized":
        raise ConfigError(
            f"training.backend = 'vectorized' trains the whole cohort from one shared model, but strategy "
            f"{strategy.name!r} gives each client its own; use 'sequential', 'debug', 'processes' or 'ray'"
        )
    if deployed and strategy.partial_updates:
        raise ConfigError(
            f"strategy {strategy.name!r} sends part of the model per client, which the gRPC server does not "
            "decode yet; it runs in simulation (fedge run); deploy fedavg, fedprox, scaffold, finetune or ditto"
        )
    for wrap in CLIENT_WRAPPERS:
        make_client = wrap(exp, data, make_client)
    transport = InProcessTransport(
        make_client,
        data.num_clients,
        strategy=strategy,
        pipeline=pipeline,
        seed=exp.seed,
        backend=make_backend(t.backend),
    )
    return Built(exp, data, learner, strategy, pipeline, transport, initial, train, sampling, deployed)


def round_extras(built: Built) -> tuple[list[Callback], RoundPolicy | None]:
    """The callbacks and the round policy the experiment's sections add, for a simulated or deployed run."""
    exp = built.exp
    extra = [cb for f in CALLBACK_FACTORIES for cb in f(exp, built)]
    policies = [p for f in POLICY_FACTORIES if (p := f(exp, built)) is not None]
    if len(policies) > 1:
        raise ConfigError("more than one round policy is configured")
    return extra, policies[0] if policies else None


def execute(built: Built, callbacks: Sequence[Callback] = ()) -> RunResult:
    exp = built.exp
    x_c, y_c = built.data.central()
    evaluator = None
    if exp.evaluation.centralized and len(y_c):

        def evaluator(params: Params) -> tuple[float, float]:
            return built.learner.evaluate(params, x_c, y_c)

    extra, policy = round_extras(built)
    fed = exp.evaluation.federated_clients
    everyone = [*extra, *callbacks]
    try:
        return run(
            strategy=built.strategy,
            transport=built.transport,
            initial_params=built.initial,
            rounds=exp.rounds,
            sampling=built.sampling,
            train=built.train,
            pipeline=built.pipeline,
            evaluator=evaluator,
            eval_plan=EvalPlan(every=exp.evaluation.every, federated_clients=fed if fed >= 0 else 10**9),
            seed=exp.seed,
            callbacks=everyone,
            max_update_norm=exp.training.max_update_norm or None,
            min_updates=exp.training.min_clients,
            policy=policy,
        )
    except KeyboardInterrupt:
        _end_interrupted(everyone)
        raise
    finally:
        built.transport.close()


def save_params_npz(params: Params, path: Path) -> None:
    arrays: dict[str, Any] = {f"p{i:03d}": p for i, p in enumerate(params)}
    np.savez(path, **arrays)


def load_params_npz(path: Path) -> Params:
    with np.load(path) as f:
        return [f[k].astype(np.float32) for k in sorted(f.files)]


def write_outputs(built: Built, result: RunResult, out: Path, wall_s: float, *, overwrite: bool = False) -> Path:
    """Write the run folder ``out`` by the rules of :mod:`fedge.core.files` (never over a user's folder).

    ``overwrite`` allows replacing an earlier fedge run there. Long-running callers claim the
    folder before training instead (:func:`~fedge.core.files.claim_output`) and call
    :func:`write_run_files` into it.
    """
    folder = claim_output(out, overwrite=overwrite)
    try:
        write_run_files(built, result, folder.tmp, wall_s)
        return folder.commit()
    except BaseException:
        folder.discard()
        raise


def write_run_files(built: Built, result: RunResult, tmp: Path, wall_s: float, *, stopped: str | None = None) -> None:
    """Write a run's files into the fresh folder ``tmp``.

    ``stopped`` marks a partial run (``"interrupted"``, ``"diverged"``): ``summary.json`` then
    has ``"partial": true`` and the files hold the rounds that finished.
    """
    from fedge.report.config import without_secrets

    # The run folder is shared and archived: it keeps no dashboard token or tracking credentials.
    (tmp / "config.toml").write_text(to_toml(without_secrets(built.exp), commented=False, used=True))
    write_jsonl(result.history, tmp / "metrics.jsonl")
    write_csv(result.history, tmp / "metrics.csv")
    save_params_npz(result.state.params, tmp / "model.npz")
    module = getattr(built.learner, "module", None)
    if module is not None:
        import torch

        from fedge.clients.torch_learner import set_params

        set_params(module, result.state.params)
        torch.save(module.state_dict(), tmp / "model.pt")
    hist = built.data.label_histogram()
    (tmp / "partition.json").write_text(
        json.dumps(
            {
                "dataset": built.data.name,
                "num_classes": built.data.num_classes,
                "label_histogram": hist.tolist(),
            }
        )
    )
    for file, names in (("clients.json", built.data.client_names), ("labels.json", built.data.label_names)):
        if names is not None:
            (tmp / file).write_text(json.dumps(mapping(names), indent=2, ensure_ascii=False))
    summary: dict[str, Any] = {
        "rounds": len(result.history),
        "num_clients": built.data.num_clients,
        "final_test_accuracy": result.history.final_accuracy,
        "final_test_loss": result.history.last("test_loss"),
        "wall_s": wall_s,
        "stopped_early": result.stopped_early,
        "partial": stopped is not None,
        "stopped": stopped,
        "client_accuracy": {str(k): v for k, v in sorted(result.client_accuracy.items())},
    }
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


DIVERGENCE_FACTOR = 1e3
"""A loss this many times the initial model's (or non-finite) stops the run as diverged."""


NON_FINITE = "NaN or Inf"
"""What the update validator's rejection says (:mod:`fedge.transport.base`): a cohort of only those diverged."""


class TrainingDiverged(FedgeError):
    """The training loss became non-finite or exploded; the finished rounds were kept as a partial run."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; ``out`` holds the finished rounds as a partial run (None if none finished)."""

    def __init__(self, rounds: int, out: Path | None) -> None:
        super().__init__(f"interrupted after {rounds} finished rounds")
        self.rounds = rounds
        self.out = out


class _Recorder(Callback):
    """Keeps the finished rounds and the latest state, for a run that is interrupted."""

    def __init__(self) -> None:
        self.history = History()
        self.state: StrategyState | None = None

    def on_run_start(self, state: StrategyState, rounds: int) -> None:
        self.state = state

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        self.history.append(record)
        self.state = state


class DivergenceGuard(Callback):
    """Stops a diverging run: a loss turns NaN/Inf or exceeds ``factor`` × the initial model's.

    A round whose every update was rejected for NaN/Inf values counts too: the model could
    never move again. ``reference`` is the initial model's loss on the held-out set (None: the first round's
    train loss). A round in which every client failed prints one warning with the reason.
    """

    def __init__(self, reference: float | None, factor: float = DIVERGENCE_FACTOR) -> None:
        self.reference = reference if reference is not None and math.isfinite(reference) else None
        self.factor = factor
        self.diverged: str | None = None
        self._warned = False

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        if record.participants == 0 and record.dropped and all(NON_FINITE in r for r in record.dropped):
            self.diverged = f"every client's update had NaN or Inf values in round {record.round}"
            raise StopRun(f"diverged: {self.diverged}")
        if record.participants == 0 and record.failed and not self._warned:
            self._warned = True
            reason = next(iter(record.dropped), "unknown")
            print(f"warning: round {record.round}: no client update was usable ({reason})", file=sys.stderr)
        train_loss = record.train_loss if record.participants else math.nan
        losses = [("train loss", train_loss), ("test loss", record.test_loss)]
        if self.reference is None and math.isfinite(record.train_loss):
            self.reference = max(abs(record.train_loss), 1e-3)
        limit = self.factor * max(self.reference or 0.0, 1e-3)
        for what, value in losses:
            if math.isinf(value) or (what == "train loss" and record.participants and math.isnan(value)):
                self.diverged = f"the {what} became {value} in round {record.round}"
            elif self.reference is not None and math.isfinite(value) and value > limit:
                self.diverged = (
                    f"the {what} reached {value:.3g} in round {record.round}, over {self.factor:g} × the initial "
                    f"{self.reference:.3g}"
                )
            if self.diverged:
                raise StopRun(f"diverged: {self.diverged}")


def _end_interrupted(callbacks: Sequence[Callback]) -> None:
    """After Ctrl-C, end every callback with the finished rounds, so trackers flush and servers stop."""
    recorder = next((cb for cb in callbacks if isinstance(cb, _Recorder)), None)
    if recorder is None or recorder.state is None:
        return
    for cb in callbacks:
        with contextlib.suppress(Exception):
            cb.on_run_end(recorder.history, recorder.state)


def _initial_loss(built: Built) -> float | None:
    x_c, y_c = built.data.central()
    if not len(y_c):
        return None
    try:
        return float(built.learner.evaluate(built.initial, x_c, y_c)[0])
    except Exception:
        return None


def claim_run_folder(exp: Experiment, output: str | Path | None, *, overwrite: bool = False) -> OutputFolder:
    """Claim the run's output folder before any work: ``output`` as given, else the config's
    ``output`` template with a ``-2``, ``-3`` ... suffix when taken (unless ``overwrite``)."""
    if output:
        return claim_output(output, overwrite=overwrite)
    return claim_output(exp.output_dir(), overwrite=overwrite, unique=True)


def run_experiment(
    exp: Experiment,
    callbacks: Sequence[Callback] = (),
    output: str | None = None,
    *,
    overwrite: bool = False,
) -> tuple[RunResult, Path]:
    """Check, build, run and write one experiment; returns the result and its run folder.

    Everything that can be checked is checked before round 1 (extras, output folder, data
    and model shapes, cohort size). Ctrl-C raises :class:`RunInterrupted` after writing the
    finished rounds as a partial run; a diverging loss raises :class:`TrainingDiverged` after
    the same.
    """
    t0 = time.perf_counter()
    check_extras(exp)
    folder = claim_run_folder(exp, output, overwrite=overwrite)
    try:
        built = build(exp)
        recorder, guard = _Recorder(), DivergenceGuard(_initial_loss(built))
        try:
            result = execute(built, [recorder, *callbacks, guard])
        except KeyboardInterrupt:
            raise _interrupted(built, recorder, folder, time.perf_counter() - t0) from None
        stopped = "diverged" if guard.diverged else None
        write_run_files(built, result, folder.tmp, time.perf_counter() - t0, stopped=stopped)
        out = folder.commit()
    except BaseException:
        folder.discard()
        raise
    if guard.diverged:
        raise TrainingDiverged(
            f"training diverged: {guard.diverged}; lower training.lr (the finished rounds are in {out}, marked partial)"
        )
    return result, out


def _interrupted(built: Built, recorder: _Recorder, folder: OutputFolder, wall_s: float) -> RunInterrupted:
    """Write the finished rounds as a partial run and return the exception that reports it."""
    if recorder.state is None or not len(recorder.history):
        folder.discard()
        return RunInterrupted(0, None)
    result = RunResult(history=recorder.history, state=recorder.state, stopped_early="interrupted")
    write_run_files(built, result, folder.tmp, wall_s, stopped="interrupted")
    return RunInterrupted(len(result.history), folder.commit())
