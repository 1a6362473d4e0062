"""One federation, built once: the composition root of every way fedge runs rounds.

:class:`Federation` holds what a run is made of: the strategy, the update pipeline, the
initial model, the clients (``client_fn``), how a round is sampled (its
:class:`BuildContext`), the evaluator, the callbacks and the round policy. It is built

* from a config (:func:`build`, used by ``fedge run``, ``fedge serve`` and ``fedge export``),
* from Python objects (:func:`fedge.run`, :meth:`Federation.of`),
* from a model and a data source that bring their own clients (``fedge finetune``: the LoRA
  path passes its adapter, its writers and its evaluator to :meth:`Federation.of`).

:meth:`Federation.run` is the one place rounds are run, over the in-process transport or
any other (``fedge serve`` passes its gRPC transport). The node of a deployment builds
only the client side (:func:`client_side`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from fedge.clients.base import Learner, LearnerClient
from fedge.config.schema import Experiment, to_dict
from fedge.core.errors import ConfigError, ModelError
from fedge.core.params import Params
from fedge.core.threads import apply_threads
from fedge.core.types import TrainConfig
from fedge.data.datasets import digits, synthetic
from fedge.data.federated import FederatedDataset
from fedge.engine import Callback, EvalPlan, Evaluator, RoundPolicy, RunResult, check_pipeline, run
from fedge.models import build_learner
from fedge.pipeline import Pipeline, Transform
from fedge.plugins import registry
from fedge.simulation.history import History, RoundRecord
from fedge.simulation.sampling import Sampling, training_sampling
from fedge.strategies import build_strategy, lookup
from fedge.strategies.base import Strategy, StrategyState
from fedge.transport.inprocess import BACKENDS, Backend, ClientFn, InProcessTransport

if TYPE_CHECKING:
    from fedge.engine import RoundState
    from fedge.strategies.influence import InfluenceBound
    from fedge.transport.base import Transport


@dataclass(frozen=True)
class BuildContext:
    """What every part of a federation reads while it is built, computed once.

    ``population`` is the number of clients, ``cohort`` how many a round selects (the
    one cohort size: sampling, secure aggregation's fixed-point range, the robust rules and
    the privacy accountant all read it here), ``sampling`` how they are selected.
    """

    population: int
    cohort: int
    sampling: Sampling
    seed: int = 0
    deployed: bool = False
    """Federation for ``fedge serve``: the rounds run over gRPC, so simulation-only parts stay out."""

    @classmethod
    def of(cls, sampling: Sampling, population: int, *, seed: int = 0, deployed: bool = False) -> BuildContext:
        return cls(population, sampling.how_many(population), sampling, seed, deployed)

    @classmethod
    def from_config(cls, exp: Experiment, population: int | None = None, *, deployed: bool = False) -> BuildContext:
        """The context of ``exp`` over ``population`` clients (default: ``[data] num_clients``).

        Under ``[async]`` the cohort is the buffer size ``K``: the clients one applied step sums
        (secure aggregation's session, central DP's normalisation)."""
        from fedge.engine.asynchronous import async_config

        n = exp.data.num_clients if population is None else population
        ctx = cls.of(training_sampling(exp.training), n, seed=exp.seed, deployed=deployed)
        buffered = async_config(exp)
        return ctx if buffered is None else replace(ctx, cohort=min(buffered.buffer_size, n))


def load_dataset(exp: Experiment) -> FederatedDataset:
    """The federated dataset ``[data]`` describes: a user loader, a built-in dataset or files."""
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
    """The ``[strategy]`` the config names, with its hyperparameters (and its own section's)."""
    s = exp.strategy
    cls = lookup(s.name)
    if cls is None:
        return build_strategy(s.name)  # raises with the list of valid names
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in to_dict(s).items() if k != "name" and k in accepted}
    section = getattr(cls, "config_section", None)
    if section:
        kwargs.update({k: v for k, v in to_dict(exp.section(section)).items() if k in accepted})
    return build_strategy(s.name, **kwargs)


def make_backend(name: str) -> Backend:
    """The named execution backend; asking for an optional one imports the part that owns it."""
    registry.load_backend(name)
    factory = BACKENDS.get(name)
    if factory is None:
        valid = sorted({*BACKENDS, *registry.names("backends")})
        raise ConfigError(f"training.backend: unknown backend {name!r}; valid: {', '.join(valid)}")
    return factory()


def train_config(exp: Experiment) -> TrainConfig:
    """The local training ``[training]`` describes."""
    t = exp.training
    return TrainConfig(
        epochs=t.local_epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )


def config_transforms(exp: Experiment, ctx: BuildContext) -> list[Transform]:
    """The pipeline transforms the experiment's parts add ([privacy], [compression], [secagg] ...), in stage
    order, after refusing in one line a combination of parts that cannot run together."""
    registry.validate(exp, ctx)
    return registry.transforms(exp, ctx)


@dataclass
class Federation:
    """Everything one federation is made of, ready to run (see the module docstring)."""

    strategy: Strategy
    pipeline: Pipeline
    initial: Params
    train: TrainConfig
    ctx: BuildContext
    client_fn: ClientFn
    rounds: int
    backend: str | Backend = "sequential"
    evaluator: Evaluator | None = None
    eval_plan: EvalPlan = field(default_factory=EvalPlan)
    callbacks: list[Callback] = field(default_factory=list)
    """Callbacks every run of this federation gets (the sections' own are added by :meth:`extras`)."""
    policy: RoundPolicy | None = None
    """The round policy; None: the one the config's sections ask for, else plain sampling."""
    max_update_norm: float | None = None
    min_updates: int = 1
    exp: Experiment | None = None
    """The config it was built from; None for a federation of Python objects (no sections)."""
    data: FederatedDataset | None = None
    """The federated dataset, for federations of arrays (not the LoRA writers)."""
    learner: Learner | None = None

    @property
    def sampling(self) -> Sampling:
        return self.ctx.sampling

    @property
    def deployed(self) -> bool:
        return self.ctx.deployed

    @property
    def seed(self) -> int:
        return self.ctx.seed

    @property
    def config(self) -> Experiment:
        """The config it was built from (a federation of Python objects has none)."""
        return _present(self.exp, "this federation was built from Python objects, not from a config")

    @property
    def dataset(self) -> FederatedDataset:
        """Its federated dataset (a federation that brings its own clients, as the LoRA path does, has none)."""
        return _present(self.data, "this federation brings its own clients, not a federated dataset")

    @property
    def model(self) -> Learner:
        """Its learner (a federation that brings its own clients has none)."""
        return _present(self.learner, "this federation brings its own clients, not a learner")

    @cached_property
    def transport(self) -> InProcessTransport:
        """The in-process transport of a simulated run (built on first use; ``fedge serve`` never does)."""
        backend = make_backend(self.backend) if isinstance(self.backend, str) else self.backend
        if self.exp is not None:
            backend = registry.wrap_backend(self.exp, self, backend)
        return InProcessTransport(
            self.client_fn,
            self.ctx.population,
            strategy=self.strategy,
            pipeline=self.pipeline,
            seed=self.seed,
            backend=backend,
        )

    @classmethod
    def of(
        cls,
        *,
        strategy: Strategy,
        client_fn: ClientFn,
        num_clients: int,
        initial: Params,
        rounds: int,
        sampling: Sampling,
        train: TrainConfig,
        transforms: Sequence[Transform] = (),
        seed: int = 0,
        **parts: Any,
    ) -> Federation:
        """A federation of Python objects; ``parts`` are the optional fields (evaluator, backend, ...)."""
        ctx = BuildContext.of(sampling, num_clients, seed=seed)
        return cls(strategy, Pipeline(transforms), initial, train, ctx, client_fn, rounds, **parts)

    def extras(self) -> tuple[list[Callback], RoundPolicy | None]:
        """The callbacks and the round policy the config's sections add (none without a config)."""
        if self.exp is None:
            return [], self.policy
        extra = registry.callbacks(self.exp, self)
        policies = registry.policies(self.exp, self)
        if self.policy is not None:
            policies.insert(0, self.policy)
        if len(policies) > 1:
            raise ConfigError("more than one round policy is configured")
        return extra, policies[0] if policies else None

    def run(
        self,
        transport: Transport | None = None,
        *,
        callbacks: Sequence[Callback] = (),
        state: StrategyState | RoundState | None = None,
        influence: InfluenceBound | None = None,
    ) -> RunResult:
        """Run the rounds left (all, or those after ``state``) over ``transport`` (default: in process).

        With ``[async] enabled`` the rounds are buffered asynchronous steps
        (:func:`fedge.engine.asynchronous.run_async`). The transport is closed when the run
        ends, however it ends.
        """
        extra, policy = self.extras()
        # A Recorder sees each round first: a Ctrl-C that lands while another callback works
        # (a tracker, a progress bar) must not lose the round that has just finished.
        recorders = [cb for cb in callbacks if isinstance(cb, Recorder)]
        others = [cb for cb in callbacks if not isinstance(cb, Recorder)]
        everyone = [*recorders, *extra, *self.callbacks, *others]
        transport = self.transport if transport is None else transport
        engine = run
        if (buffered := asynchronous_config(self.exp)) is not None:
            from fedge.engine.asynchronous import run_async

            engine = functools.partial(run_async, config=buffered)
        try:
            return engine(
                strategy=self.strategy,
                transport=transport,
                initial_params=self.initial,
                rounds=self.rounds,
                sampling=self.sampling,
                train=self.train,
                pipeline=self.pipeline,
                evaluator=self.evaluator,
                eval_plan=self.eval_plan,
                seed=self.seed,
                callbacks=everyone,
                state=state,
                max_update_norm=self.max_update_norm,
                min_updates=self.min_updates,
                policy=policy,
                influence=influence,
            )
        except KeyboardInterrupt:
            end_interrupted(everyone)
            raise
        finally:
            transport.close()


T = TypeVar("T")


def asynchronous_config(exp: Experiment | None) -> Any:
    """The enabled ``[async]`` section of ``exp`` (then runs use ``engine.asynchronous.run_async``), else None."""
    if exp is None or "async" not in exp.extensions:
        return None
    from fedge.engine.asynchronous import async_config

    return async_config(exp)


def _present(value: T | None, missing: str) -> T:
    if value is None:
        raise ConfigError(missing)
    return value


class Recorder(Callback):
    """Keeps the finished rounds and the latest state, for a run that is interrupted."""

    def __init__(self) -> None:
        self.history = History()
        self.state: StrategyState | None = None

    def on_run_start(self, state: StrategyState, rounds: int) -> None:
        self.state = state

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        self.history.append(record)
        self.state = state


def end_interrupted(callbacks: Sequence[Callback]) -> None:
    """After Ctrl-C, end every callback with the finished rounds a :class:`Recorder` among them kept,
    so trackers flush and servers stop."""
    recorder = next((cb for cb in callbacks if isinstance(cb, Recorder)), None)
    if recorder is None or recorder.state is None:
        return
    for cb in callbacks:
        with contextlib.suppress(Exception):
            cb.on_run_end(recorder.history, recorder.state)


def check_model(learner: Learner, params: Params, data: FederatedDataset) -> None:
    """Fail early, with one line, when the model's output does not fit the labels."""
    try:
        learner.evaluate(params, data.x[:1], np.asarray([data.num_classes - 1], dtype=np.int64))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"model does not accept the data's {data.feature_shape} features: {exc}") from None


def central_evaluator(learner: Learner, data: FederatedDataset) -> Evaluator | None:
    """Evaluation on the held-out set (None when the data has none)."""
    x_c, y_c = data.central()
    if not len(y_c):
        return None

    def evaluate(params: Params) -> tuple[float, float]:
        return learner.evaluate(params, x_c, y_c)

    return evaluate


def build(exp: Experiment, *, dataset: FederatedDataset | None = None, deployed: bool = False) -> Federation:
    """Load the data and build the model, strategy and pipeline of ``exp``, checking that they fit.

    Applies ``[training] threads`` first (before PyTorch and the BLAS pools start working).
    """
    from fedge.personalization import bind_heterofl
    from fedge.preflight import check_dataset

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
    t = exp.training
    ctx = BuildContext.from_config(exp, data.num_clients, deployed=deployed)

    def client_fn(cid: int) -> LearnerClient:
        return LearnerClient(cid, learner, data.client(cid))

    make_client: ClientFn = bind_heterofl(exp, data, strategy, client_fn)
    if strategy.per_client_models and t.backend == "vectorized":
        raise ConfigError(
            f"training.backend = 'vectorized' trains the whole cohort from one shared model, but strategy "
            f"{strategy.name!r} gives each client its own; use 'sequential', 'debug', 'processes' or 'ray'"
        )
    make_client = registry.wrap_client(exp, data, make_client)
    pipeline = Pipeline(config_transforms(exp, ctx))
    check_pipeline(strategy, pipeline)  # before a server starts: sub-models cannot be masked or encoded
    fed = exp.evaluation.federated_clients
    return Federation(
        strategy=strategy,
        pipeline=pipeline,
        initial=initial,
        train=train_config(exp),
        ctx=ctx,
        client_fn=make_client,
        rounds=exp.rounds,
        backend=t.backend,
        evaluator=central_evaluator(learner, data) if exp.evaluation.centralized else None,
        # Over gRPC too: the sampled nodes evaluate on their own test data (GrpcTransport.evaluate).
        eval_plan=EvalPlan(every=exp.evaluation.every, federated_clients=fed if fed >= 0 else 10**9),
        max_update_norm=t.max_update_norm or None,
        min_updates=t.min_clients,
        exp=exp,
        data=data,
        learner=learner,
    )


def client_side(exp: Experiment) -> tuple[Strategy, Pipeline]:
    """What a deployed node builds of a federation: the strategy's client hooks and the pipeline's forward half."""
    ctx = BuildContext.from_config(exp, exp.data.num_clients, deployed=True)
    return make_strategy(exp), Pipeline(config_transforms(exp, ctx))


def execute(fed: Federation, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Run a federation in process with extra ``callbacks``."""
    return fed.run(callbacks=callbacks)
