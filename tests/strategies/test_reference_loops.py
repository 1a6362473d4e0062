"""fedge's global weights after 3 rounds equal a hand-written PyTorch loop's (FedAvg, FedProx, FedAdam)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import fedge
from fedge.strategies import FedAdam, FedAvg, FedProx, Strategy

SEED = 7
ROUNDS = 3
PER_ROUND = 4
EPOCHS = 2
BATCH = 5
LR = 0.1


def make_clients(n_clients: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(123)
    out = []
    for k in range(n_clients):
        n = 7 + 3 * k  # ragged sizes, last batch smaller than BATCH
        x = rng.normal(k * 0.1, 1.0, (n, 6)).astype(np.float32)
        y = rng.integers(0, 3, n).astype(np.int64)
        out.append((x, y))
    return out


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def reference(
    clients: list[tuple[np.ndarray, np.ndarray]],
    model: nn.Module,
    *,
    mu: float = 0.0,
    adam: dict[str, float] | None = None,
) -> list[np.ndarray]:
    """The plainest loop: sample, train each client with torch.optim.SGD, average, step."""
    glob = [p.detach().clone() for p in model.parameters()]
    m = [torch.zeros_like(p) for p in glob]
    v = [torch.full_like(p, adam["tau"] ** 2) for p in glob] if adam else None
    for rnd in range(1, ROUNDS + 1):
        rng = np.random.default_rng([SEED, rnd, 0x5E1EC7])
        chosen = sorted(int(c) for c in rng.choice(np.arange(len(clients)), PER_ROUND, replace=False))
        total = 0.0
        acc = [torch.zeros_like(p, dtype=torch.float64) for p in glob]
        for cid in chosen:
            x, y = (torch.from_numpy(a) for a in clients[cid])
            local = copy.deepcopy(model)
            with torch.no_grad():
                for p, g in zip(local.parameters(), glob, strict=True):
                    p.copy_(g)
            opt = torch.optim.SGD(local.parameters(), lr=LR)
            crng = np.random.default_rng([SEED, rnd, cid, 0])
            for _ in range(EPOCHS):
                order = crng.permutation(len(y))
                for i in range(0, len(y), BATCH):
                    idx = torch.from_numpy(order[i : i + BATCH])
                    opt.zero_grad()
                    loss = nn.functional.cross_entropy(local(x[idx]), y[idx])
                    if mu:
                        loss = loss + mu / 2 * sum(
                            ((p - g) ** 2).sum() for p, g in zip(local.parameters(), glob, strict=True)
                        )
                    loss.backward()
                    opt.step()
            for a, p in zip(acc, local.parameters(), strict=True):
                a += len(y) * p.detach().double()
            total += len(y)
        mean = [(a / total).float() for a in acc]
        if adam is None:
            glob = mean
        else:
            delta = [mw - g for mw, g in zip(mean, glob, strict=True)]
            assert v is not None
            m = [adam["beta1"] * mi + (1 - adam["beta1"]) * d for mi, d in zip(m, delta, strict=True)]
            v = [adam["beta2"] * vi + (1 - adam["beta2"]) * d * d for vi, d in zip(v, delta, strict=True)]
            glob = [g + adam["eta"] * mi / (vi.sqrt() + adam["tau"]) for g, mi, vi in zip(glob, m, v, strict=True)]
    return [g.numpy() for g in glob]


def run_fedge(clients: list[tuple[np.ndarray, np.ndarray]], strategy: Strategy) -> list[np.ndarray]:
    result = fedge.run(
        make_model(),
        clients,
        strategy=strategy,
        rounds=ROUNDS,
        clients_per_round=PER_ROUND,
        local_epochs=EPOCHS,
        batch_size=BATCH,
        lr=LR,
        seed=SEED,
    )
    assert len(result.history) == ROUNDS
    return result.state.params


@pytest.mark.parametrize(
    ("strategy", "kwargs"),
    [
        (FedAvg(), {}),
        (FedProx(mu=0.5), {"mu": 0.5}),
        (
            FedAdam(server_lr=0.05, beta1=0.9, beta2=0.99, tau=1e-3),
            {"adam": {"eta": 0.05, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}},
        ),
    ],
    ids=["fedavg", "fedprox", "fedadam"],
)
def test_matches_hand_written_loop(strategy: Strategy, kwargs: dict) -> None:
    clients = make_clients()
    got = run_fedge(clients, strategy)
    want = reference(clients, make_model(), **kwargs)
    initial = [p.detach().numpy() for p in make_model().parameters()]
    assert any(not np.allclose(g, i) for g, i in zip(got, initial, strict=True)), "model never moved"
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


def test_fedprox_differs_from_fedavg() -> None:
    clients = make_clients()
    a = run_fedge(clients, FedAvg())
    b = run_fedge(clients, FedProx(mu=0.5))
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)) > 1e-4
