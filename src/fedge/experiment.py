"""Build and run a whole experiment from its configuration, and write its output folder.

The folder holds ``config.toml`` (resolved), ``metrics.jsonl`` and ``metrics.csv`` (one
row per round), ``model.npz`` and ``model.pt`` (PyTorch state dict, for torch models),
``partition.json`` (label histogram per client) and ``summary.json``. It is written to a
temporary sibling and renamed into place, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.clients.base import Learner, LearnerClient
from fedge.config.schema import Experiment, to_dict, to_toml
from fedge.core.errors import ConfigError, ModelError
from fedge.core.files import atomic_folder
from fedge.core.params import Params
from fedge.core.types import TrainConfig
from fedge.data.datasets import digits, federate, synthetic
from fedge.data.federated import FederatedDataset
from fedge.data.loaders import load_files
from fedge.models import build_learner
from fedge.pipeline import Pipeline, Transform
from fedge.simulation.history import write_csv, write_jsonl
from fedge.simulation.loop import Callback, EvalPlan, RoundPolicy, RunResult, run
from fedge.simulation.sampling import Sampling
from fedge.strategies import REGISTRY, build_strategy
from fedge.strategies.base import Strategy
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
    if not d.path:
        raise ConfigError("data.path: required when data.dataset = 'files'")
    x, y, parts = load_files(d.path, label=d.label_column, client=d.client_column or None)
    rng = np.random.default_rng(exp.seed)
    if parts is None:
        return federate(
            x,
            y,
            num_clients=d.num_clients,
            scheme=d.partition,
            test_fraction=d.test_fraction,
            rng=rng,
            name=Path(d.path).name,
            alpha=d.alpha,
            shards_per_client=d.shards_per_client,
            exponent=d.powerlaw_exponent,
        )
    from fedge.data.federated import split_local

    train, test = split_local(parts, d.test_fraction, rng)
    return FederatedDataset(x=x, y=y, train=train, test=test, num_classes=int(y.max()) + 1, name=Path(d.path).name)


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


def check_model(learner: Learner, params: Params, data: FederatedDataset) -> None:
    """Fail early, with one line, when the model's output does not fit the labels."""
    try:
        learner.evaluate(params, data.x[:1], np.asarray([data.num_classes - 1], dtype=np.int64))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"model does not accept the data's {data.feature_shape} features: {exc}") from None


def build(exp: Experiment, *, dataset: FederatedDataset | None = None) -> Built:
    data = dataset or load_dataset(exp)
    learner = build_learner(
        exp.model.name,
        exp.model.framework,
        data.feature_shape,
        exp.model.num_classes or data.num_classes,
        exp.model.hidden,
    )
    initial = learner.init_params(exp.seed)
    check_model(learner, initial, data)
    strategy = make_strategy(exp)
    transforms = [t for f in TRANSFORM_FACTORIES for t in f(exp)]
    pipeline = Pipeline(transforms)
    t = exp.training
    train = TrainConfig(
        epochs=t.local_epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )
    sampling = Sampling(
        count=t.clients_per_round or None,
        fraction=t.fraction if not t.clients_per_round else None,
        minimum=t.min_clients,
    )
    if not t.clients_per_round and not t.fraction:
        raise ConfigError("training: set clients_per_round or fraction")

    def client_fn(cid: int) -> LearnerClient:
        return LearnerClient(cid, learner, data.client(cid))

    make_client: ClientFn = client_fn
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
    return Built(exp, data, learner, strategy, pipeline, transport, initial, train, sampling)


def execute(built: Built, callbacks: Sequence[Callback] = ()) -> RunResult:
    exp = built.exp
    x_c, y_c = built.data.central()
    evaluator = None
    if exp.evaluation.centralized and len(y_c):

        def evaluator(params: Params) -> tuple[float, float]:
            return built.learner.evaluate(params, x_c, y_c)

    extra = [cb for f in CALLBACK_FACTORIES for cb in f(exp, built)]
    policies = [p for f in POLICY_FACTORIES if (p := f(exp, built)) is not None]
    if len(policies) > 1:
        raise ConfigError("more than one round policy is configured")
    fed = exp.evaluation.federated_clients
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
            callbacks=[*extra, *callbacks],
            max_update_norm=exp.training.max_update_norm or None,
            min_updates=exp.training.min_clients,
            policy=policies[0] if policies else None,
        )
    finally:
        built.transport.close()


def save_params_npz(params: Params, path: Path) -> None:
    arrays: dict[str, Any] = {f"p{i:03d}": p for i, p in enumerate(params)}
    np.savez(path, **arrays)


def load_params_npz(path: Path) -> Params:
    with np.load(path) as f:
        return [f[k].astype(np.float32) for k in sorted(f.files)]


def write_outputs(built: Built, result: RunResult, out: Path, wall_s: float) -> Path:
    """Write the run folder atomically (temporary sibling, then rename)."""
    out = out.resolve()
    with atomic_folder(out) as tmp:
        (tmp / "config.toml").write_text(to_toml(built.exp, commented=False))
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
        summary: dict[str, Any] = {
            "rounds": len(result.history),
            "final_test_accuracy": result.history.final_accuracy,
            "final_test_loss": result.history.last("test_loss"),
            "wall_s": wall_s,
            "stopped_early": result.stopped_early,
            "client_accuracy": {str(k): v for k, v in sorted(result.client_accuracy.items())},
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return out


def run_experiment(
    exp: Experiment, callbacks: Sequence[Callback] = (), output: str | None = None
) -> tuple[RunResult, Path]:
    t0 = time.perf_counter()
    built = build(exp)
    result = execute(built, callbacks)
    out = write_outputs(built, result, Path(output or exp.output_dir()), time.perf_counter() - t0)
    return result, out
