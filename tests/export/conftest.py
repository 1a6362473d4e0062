from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished digits run folder (mlp with 16 hidden units, 3 rounds)."""
    from fedge.config.schema import from_dict
    from fedge.experiment import run_experiment

    exp = from_dict(
        {
            "seed": 1,
            "rounds": 3,
            "data": {"dataset": "digits", "num_clients": 10},
            "model": {"name": "mlp", "hidden": [16]},
            "training": {"clients_per_round": 5, "local_epochs": 2},
        }
    )
    out = tmp_path_factory.mktemp("runs") / "digits"
    run_experiment(exp, output=str(out))
    return out
