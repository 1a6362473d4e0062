"""Checks before round 1, through ``fedge.run`` and the preflight functions themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fedge
from fedge.config.schema import from_dict
from fedge.core.errors import ConfigError, ModelError
from fedge.core.extras import MissingExtraError, missing_message, require, require_installed
from fedge.engine import Callback
from fedge.preflight import check_population
from fedge.simulation.history import RoundRecord
from fedge.strategies.base import StrategyState
from fedge.strategies.fedprox import FedProx


def make_clients(n: int = 3, width: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(20, width)).astype(np.float32), rng.integers(0, 2, 20)) for _ in range(n)]


class Rounds(Callback):
    """Records whether the round loop started, to show a check came before it."""

    def __init__(self) -> None:
        self.started = 0
        self.ended: list[int] = []

    def on_run_start(self, state: StrategyState, rounds: int) -> None:
        self.started += 1

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        self.ended.append(record.round)


def test_a_strategy_by_name_with_its_hyperparameters() -> None:
    torch.manual_seed(0)
    clients = make_clients()
    seen = Rounds()
    result = fedge.run(
        torch.nn.Linear(4, 2),
        clients,
        strategy="fedprox",
        strategy_kwargs={"mu": 0.1},
        rounds=2,
        test=clients[0],
        callbacks=[seen],
    )
    assert isinstance(result, fedge.RunResult)
    assert [r.round for r in result.history] == [1, 2] == seen.ended and seen.started == 1
    assert all(r.participants == 3 for r in result.history)
    assert 0 <= result.history.final_accuracy <= 1


def test_a_named_strategy_gets_its_kwargs() -> None:
    from fedge.api import _strategy

    chosen = _strategy("fedprox", {"mu": 0.25})
    assert isinstance(chosen, FedProx) and chosen.mu == 0.25


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "fedprax"}, "unknown strategy 'fedprax' (did you mean 'fedprox'?)"),
        ({"strategy": "fedprox", "strategy_kwargs": {"muu": 1}}, "muu"),
        ({"strategy": FedProx(), "strategy_kwargs": {"mu": 1}}, "strategy_kwargs: only with a strategy given by name"),
        ({"clients_per_round": 4}, "clients_per_round = 4 must lie in [1, 3]"),
        ({"clients_per_round": 0}, "clients_per_round = 0 must lie in [1, 3]"),
        ({"rounds": 0}, "rounds = 0 must be >= 1"),
        ({"batch_size": 0}, "batch_size = 0 must be >= 1"),
        ({"lr": -0.1}, "lr = -0.1 must be > 0"),
        ({"threads": -1}, "threads = -1 must be >= 0"),
    ],
)
def test_bad_run_arguments_are_one_config_error_before_any_round(kwargs: dict[str, object], message: str) -> None:
    seen = Rounds()
    with pytest.raises(ConfigError) as err:
        fedge.run(torch.nn.Linear(4, 2), make_clients(), callbacks=[seen], **{"rounds": 1, **kwargs})  # type: ignore[arg-type]
    assert message in str(err.value) and "\n" not in str(err.value)
    assert seen.started == 0


@pytest.mark.parametrize("odd", [0, 1, 2])
def test_a_client_with_other_features_is_named_before_any_round(odd: int) -> None:
    clients = make_clients()
    clients[odd] = (np.zeros((20, 5), np.float32), clients[odd][1])
    seen = Rounds()
    with pytest.raises(ModelError, match=rf"^client {odd} has features of shape \(5,\), but client \d has \(4,\)$"):
        fedge.run(torch.nn.Linear(4, 2), clients, rounds=1, callbacks=[seen])
    assert seen.started == 0


def test_features_the_model_does_not_accept_are_one_model_error() -> None:
    seen = Rounds()
    with pytest.raises(ModelError, match=r"does not accept the clients' features of shape \(5,\)"):
        fedge.run(torch.nn.Linear(4, 2), make_clients(width=5), rounds=1, callbacks=[seen])
    assert seen.started == 0


def test_a_cohort_larger_than_the_population_is_refused() -> None:
    exp = from_dict({"training": {"clients_per_round": 5}})
    check_population(exp, 5)
    with pytest.raises(ConfigError, match="clients_per_round = 5 is larger than the 4 clients"):
        check_population(exp, 4)


def test_a_missing_optional_module_names_its_extra() -> None:
    assert (
        missing_message("matplotlib.pyplot")
        == "matplotlib is needed, which is not installed: pip install 'fedge[report]'"
    )
    assert missing_message("torch", "model.framework = 'torch'") == (
        "model.framework = 'torch' needs PyTorch, which is not installed: pip install 'fedge[torch]'"
    )
    assert missing_message("numpy_but_not_an_extra") is None
    assert require("json").dumps([1]) == "[1]"
    with pytest.raises(MissingExtraError, match=r"^training.backend = 'ray' needs Ray, .*'fedge\[ray\]'$"):
        require("ray._no_such_submodule_", "training.backend = 'ray'")


def test_the_digits_check_finds_scikit_learn_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import subprocess
    import sys

    code = (
        "import sys; from fedge.config import from_dict; from fedge.preflight import check_extras; "
        "check_extras(from_dict({})); print('sklearn' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    require_installed("json")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"^data.dataset = 'digits' needs scikit-learn, .*'fedge\[data\]'$"):
        require_installed("sklearn", "data.dataset = 'digits'")
