"""User code through entry points: model factory, data loader and loss, with one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedge.config.schema import from_dict
from fedge.core.errors import ConfigError
from fedge.federation import build, execute
from fedge.usercode import resolve

PKG = """
import numpy as np
import torch
from torch import nn

def make_net(feature_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(feature_shape)), 7), nn.ReLU(), nn.Linear(7, num_classes))

def not_a_model():
    return 42

def broken():
    raise RuntimeError("no weights here")

VALUE = 3

def load_client(client_id, num_clients, seed):
    rng = np.random.default_rng([seed, client_id])
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return x[:30], y[:30], x[30:], y[30:]

class Pairs(torch.utils.data.Dataset):
    def __init__(self, n):
        self.x = torch.arange(n * 5, dtype=torch.float32).reshape(n, 5) / (n * 5)
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return self.x[i], torch.tensor(i % 2)

def load_dataset_client(cid):
    return Pairs(12)

def zero_loss(logits, targets):
    return (logits * 0).sum()
"""


@pytest.fixture
def pkg(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A user module with a unique name on sys.path (unique, so tests never share an import)."""
    name = f"userpkg_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(PKG)
    sys.path.insert(0, str(tmp_path))
    yield name
    sys.path.remove(str(tmp_path))
    sys.modules.pop(name, None)


def experiment(
    pkg: str, *, loss: str = "", backend: str = "sequential", loader: str = "load_client"
) -> dict[str, object]:
    return {
        "rounds": 2,
        "data": {"loader": f"{pkg}:{loader}", "num_clients": 3},
        "model": {"factory": f"{pkg}:make_net"},
        "training": {
            "clients_per_round": 3,
            "local_epochs": 1,
            "batch_size": 8,
            "lr": 0.1,
            "backend": backend,
            "loss": f"{pkg}:{loss}" if loss else "",
        },
    }


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("nomodule_xyz:make", "cannot import 'nomodule_xyz'"),
        ("nomodule_xyz.sub:make", "(fedge join: --project DIR)?"),
        ("{pkg}:missing", "has no attribute 'missing'"),
        ("{pkg}:VALUE", "is a int, not a callable"),
        ("{pkg}", "not an entry point"),
    ],
)
def test_resolve_errors_are_one_line_naming_the_entry_point(pkg: str, attr: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"model\.factory") as err:
        resolve(attr.format(pkg=pkg), key="model.factory")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("factory", "message"), [("not_a_model", "returned a int"), ("broken", "no weights here")])
def test_factory_returning_the_wrong_type_or_raising_is_one_line(pkg: str, factory: str, message: str) -> None:
    cfg = experiment(pkg)
    cfg["model"] = {"factory": f"{pkg}:{factory}"}
    with pytest.raises(ConfigError, match=f"model.factory: .*{message}"):
        build(from_dict(cfg))


def test_factory_and_loader_build_the_user_model_on_the_user_data(pkg: str) -> None:
    built = build(from_dict(experiment(pkg)))
    assert built.data.num_clients == 3 and built.data.feature_shape == (5,)
    assert [p.shape for p in built.initial] == [(7, 5), (7,), (2, 7), (2,)]
    assert execute(built).history.rounds[-1].test_accuracy is not None


def test_factory_on_processes_backend_equals_sequential(pkg: str) -> None:
    seq = execute(build(from_dict(experiment(pkg)))).state.params
    proc = execute(build(from_dict(experiment(pkg, backend="processes")))).state.params
    for a, b in zip(seq, proc, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_custom_loss_is_used_for_training(pkg: str) -> None:
    built = build(from_dict(experiment(pkg, loss="zero_loss")))
    final = execute(built).state.params
    for a, b in zip(final, built.initial, strict=True):
        np.testing.assert_array_equal(a, b)  # a zero loss has zero gradients: nothing moves
    moved = execute(build(from_dict(experiment(pkg)))).state.params
    assert any(not np.array_equal(a, b) for a, b in zip(moved, built.initial, strict=True))


def test_torch_dataset_loader_is_materialised(pkg: str) -> None:
    built = build(from_dict(experiment(pkg, loader="load_dataset_client")))
    client = built.data.client(1)
    assert len(client.y_train) == 12 and client.x_train.shape == (12, 5)
    assert list(client.y_train[:4]) == [0, 1, 0, 1]
