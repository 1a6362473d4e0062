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


@pytest.fixture(scope="session")
def digits_models() -> dict[str, object]:
    """The built-in mlp and cnn trained briefly on digits, with held-out inputs and labels.

    Trained, so that argmax comparisons (int8 vs float) measure quantisation, not near-ties.
    """
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from fedge.models import torch_module

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    models: dict[str, object] = {"x_train": x[:1200], "x_test": x[1200:], "y_test": y[1200:]}
    for name in ("mlp", "cnn"):
        torch.manual_seed(0)
        module = torch_module(name, (64,), 10, [32])
        opt = torch.optim.Adam(module.parameters(), lr=0.01)
        xt, yt = torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200])
        for _ in range(60):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(module(xt), yt).backward()
            opt.step()
        models[name] = module.eval()
    return models
