"""Checks that run before the first round, so a run fails in seconds with one line, not after training.

Each check raises a :class:`~fedge.core.errors.FedgeError` subclass whose message names
the key, the file or the package to install. The output location is checked separately,
by claiming it (:func:`fedge.core.files.claim_output`) before the data is loaded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedge.clients.base import Learner
from fedge.config.schema import Experiment, TrainingConfig
from fedge.core.errors import ConfigError, ModelError
from fedge.core.extras import require, require_installed
from fedge.core.params import Params
from fedge.data.federated import FederatedDataset
from fedge.simulation.sampling import cohort_size


def check_extras(exp: Experiment) -> None:
    """Every optional package the configuration needs can be imported (else: which extra to install)."""
    if exp.model.framework == "torch" and not exp.model.factory:
        require_installed("torch", "model.framework = 'torch'")
    if exp.data.dataset == "digits" and not exp.data.loader:
        require_installed("sklearn", "data.dataset = 'digits'")  # the file is read, sklearn not imported
    backend = exp.training.backend
    if backend == "vectorized":
        require("torch", "training.backend = 'vectorized'")
    elif backend == "ray":
        require("ray", "training.backend = 'ray'")


DEFAULT_COHORT = TrainingConfig().clients_per_round
"""Left at its default, ``clients_per_round`` means "up to this many": a small federation selects all."""


def check_population(exp: Experiment, num_clients: int) -> None:
    """A cohort size the user set fits the population, and a round can reach ``min_clients``."""
    t = exp.training
    if t.clients_per_round > num_clients and t.clients_per_round != DEFAULT_COHORT:
        raise ConfigError(
            f"training.clients_per_round = {t.clients_per_round} is larger than the {num_clients} clients "
            "of the data; lower it (or use training.fraction)"
        )
    cohort = cohort_size(t, num_clients)
    if t.min_clients > cohort:
        raise ConfigError(
            f"training.min_clients = {t.min_clients} is more than the {cohort} clients selected per round, "
            "so no round could change the model"
        )


def _feature_problem(learner: Learner, params: Params, x: Any, num_classes: int) -> str | None:
    try:
        learner.evaluate(params, np.asarray(x[:1], dtype=np.float32), np.asarray([num_classes - 1], dtype=np.int64))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def check_client_features(
    learner: Learner, params: Params, features: Sequence[Any], num_classes: int, *, names: Sequence[str] = ()
) -> None:
    """Every client's features have one shape, and the model accepts it.

    ``features`` holds each client's feature array (only their shapes and first rows are
    read). A client that does not fit would otherwise fail every round; this names it.
    """
    if not features:
        return
    label = list(names) or [f"client {k}" for k in range(len(features))]
    shapes = [tuple(np.shape(x)[1:]) for x in features]
    first = Counter(shapes).most_common(1)[0][0]  # the odd one out is blamed, not client 0
    for k, shape in enumerate(shapes):
        if shape != first:
            others = label[shapes.index(first)]
            raise ModelError(f"{label[k]} has features of shape {shape}, but {others} has {first}")
    nonempty = next((x for x in features if len(x)), None)
    if nonempty is None:
        return
    problem = _feature_problem(learner, params, nonempty, num_classes)
    if problem is not None:
        raise ModelError(f"the model does not accept the clients' features of shape {first}: {problem}")


def check_dataset(exp: Experiment, learner: Learner, params: Params, data: FederatedDataset) -> None:
    """The checks a simulated run needs once its data and model are built."""
    check_population(exp, data.num_clients)
    shape = data.feature_shape
    if data.x_central is not None and len(data.x_central) and tuple(data.x_central.shape[1:]) != tuple(shape):
        raise ModelError(f"the central test set has features of shape {data.x_central.shape[1:]}, the clients {shape}")
