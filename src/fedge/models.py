"""Built-in models by name, for configs and the CLI: ``logreg``, ``mlp`` and ``cnn``, or the user's factory.

Each exists as a PyTorch module and (``logreg``, ``mlp``) as a NumPy-only learner with
the same parameter layout, so the two can be mixed in one federation. The PyTorch
``logreg`` and ``mlp`` train through the NumPy :class:`~fedge.clients.kernel.DenseKernel`
(same batches, same result, a fraction of torch's per-step overhead); the module is still
there for export, the vectorized backend and initialisation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from fedge.clients.base import Learner
from fedge.clients.kernel import DenseKernel
from fedge.clients.numpy_models import NumpyMLP
from fedge.core.errors import ConfigError, ModelError

MODELS = ("logreg", "mlp", "cnn")
FRAMEWORKS = ("torch", "numpy")


def width_hidden(hidden: Sequence[int], width: float) -> tuple[int, ...]:
    """Hidden sizes of the width-``width`` sub-model (HeteroFL): ``ceil(width * h)`` each, at least 1."""
    from fedge.strategies.heterofl import scaled

    return tuple(scaled(int(h), width) for h in hidden)


def torch_module(
    name: str, feature_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64,), width: float = 1.0
) -> Any:
    """A fresh ``nn.Module`` (call under ``torch.manual_seed`` for a fixed init).

    ``width`` < 1 builds HeteroFL's sub-model: hidden units (mlp) or channels (cnn) scaled,
    each hidden layer's output multiplied by ``1 / width`` (the paper's scaler), so the
    sub-model's activations keep the full model's magnitude.
    """
    from torch import nn

    from fedge.clients.torch_learner import Scaler

    in_features = math.prod(feature_shape)
    if width != 1:
        hidden = width_hidden(hidden, width)
    c1, c2 = (16, 32) if width == 1 else width_hidden((16, 32), width)

    def act() -> list[nn.Module]:
        return [nn.ReLU()] if width == 1 else [Scaler(1.0 / width), nn.ReLU()]

    if name == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))
    if name == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        sizes = [in_features, *hidden]
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), *act()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        return nn.Sequential(*layers)
    if name == "cnn":
        side = math.isqrt(in_features)
        if side * side != in_features:
            raise ModelError(f"cnn needs square single-channel images; {in_features} features are not")
        return nn.Sequential(
            nn.Unflatten(1, (1, side, side)),
            nn.Conv2d(1, c1, 3, padding=1),
            *act(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            *act(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * (side // 4) ** 2, num_classes),
        )
    raise ConfigError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")


def build_learner(
    name: str,
    framework: str,
    feature_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] = (64,),
    *,
    factory: str = "",
    loss: str = "",
    width: float = 1.0,
) -> Learner:
    """The learner for a built-in model by name, or for the user's ``factory`` entry point when set.

    ``width`` < 1 builds the HeteroFL sub-model of a built-in model (not of a user factory).
    """
    if factory:
        if width != 1:
            raise ConfigError("heterofl: sub-models of width < 1 exist for the built-in mlp and cnn, not model.factory")
        return user_learner(factory, feature_shape, num_classes, hidden, loss=loss)
    if framework == "numpy":
        if name == "cnn":
            raise ConfigError("model 'cnn' has no NumPy implementation; use framework = 'torch'")
        if name not in MODELS:
            raise ConfigError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
        if name == "mlp" and width != 1:
            return NumpyMLP(math.prod(feature_shape), num_classes, width_hidden(hidden, width), scale=1.0 / width)
        return NumpyMLP(math.prod(feature_shape), num_classes, hidden if name == "mlp" else ())
    if framework != "torch":
        raise ConfigError(f"unknown framework {framework!r}; valid: {', '.join(FRAMEWORKS)}")
    from fedge.clients.torch_learner import TorchLearner

    torch_module(name, feature_shape, num_classes, hidden, width)  # fail early on a bad name or shape
    kernel = None
    if name in ("logreg", "mlp") and not loss:
        sizes = () if name == "logreg" else (width_hidden(hidden, width) if width != 1 else tuple(hidden))
        kernel = DenseKernel([math.prod(feature_shape), *sizes, num_classes], scale=1.0 / width)
    builder = _ModuleFactory(name, tuple(feature_shape), num_classes, tuple(hidden), width)
    return TorchLearner(builder, loss=loss, kernel=kernel)


def user_learner(
    spec: str, feature_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64,), loss: str = ""
) -> Learner:
    """The learner for ``[model] factory = spec``: a user callable returning an ``nn.Module`` or a Learner.

    The factory is called with those of ``feature_shape``, ``num_classes`` and ``hidden`` it
    accepts. A module is wrapped in a :class:`TorchLearner` whose builder re-imports the
    factory by name, so worker processes can rebuild it.
    """
    factory = UserFactory(spec, tuple(feature_shape), num_classes, tuple(hidden))
    made = factory()
    if isinstance(made, Learner):
        return made
    try:
        from torch import nn
    except ModuleNotFoundError:
        nn = None  # type: ignore[assignment]
    if nn is None or not isinstance(made, nn.Module):
        raise ConfigError(
            f"model.factory: {spec} returned a {type(made).__name__}, not a torch nn.Module or a fedge Learner"
        )
    from fedge.clients.torch_learner import TorchLearner

    return TorchLearner(factory, loss=loss)


class UserFactory:
    """A picklable zero-argument builder that imports and calls a user model factory by name."""

    def __init__(self, spec: str, shape: tuple[int, ...], classes: int, hidden: tuple[int, ...]):
        self.spec = spec
        self.args = (shape, classes, hidden)

    def __call__(self) -> Any:
        from fedge.usercode import call, resolve

        shape, classes, hidden = self.args
        fn = resolve(self.spec, key="model.factory")
        return call(fn, self.spec, key="model.factory", feature_shape=shape, num_classes=classes, hidden=list(hidden))


class _ModuleFactory:
    """A picklable zero-argument builder of a named module (for worker processes)."""

    def __init__(self, name: str, shape: tuple[int, ...], classes: int, hidden: tuple[int, ...], width: float = 1.0):
        self.args = (name, shape, classes, hidden)
        self.width = width

    def __call__(self) -> Any:
        name, shape, classes, hidden = self.args
        return torch_module(name, shape, classes, hidden, self.width)
