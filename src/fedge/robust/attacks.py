"""Attack simulation: a fixed, seed-chosen set of malicious clients that lie.

Malicious clients are wrapped around the honest ones (:class:`AttackClient`), so the
attack works with every strategy and transform and the honest clients are untouched.

* ``label-flip`` — train on labels ``y -> C - 1 - y`` (Tolpegin et al., ESORICS 2020);
* ``sign-flip`` — send ``-scale * delta`` (Damaskinos et al., 2018; default scale 10);
* ``scaling`` — model replacement (Bagdasaryan et al., "How To Backdoor Federated
  Learning", AISTATS 2020): train the poisoned (label-flipped) model and boost its delta
  by ``gamma = clients per round / server_lr`` so it replaces the global model;
* ``gaussian`` — send pure Gaussian noise of standard deviation ``noise_std``;
* ``alie`` — "A Little Is Enough" (Baruch et al., NeurIPS 2019): the colluders estimate
  the coordinate-wise mean ``mu`` and standard deviation ``sigma`` of honest updates from
  their own honest updates and all send ``mu - z * sigma``, with Baruch et al.'s
  ``z_max`` for the cohort size unless ``alie_z`` is set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from fedge.clients.base import Client, ClientData, LearnerClient, TrainResult
from fedge.core.errors import ConfigError
from fedge.core.params import Params, ParamSpec, add, flatten, sub, unflatten
from fedge.core.types import ClientContext, EvalResult, TrainConfig, client_rng

ATTACKS = ("none", "label-flip", "sign-flip", "scaling", "gaussian", "alie")
ClientFn = Callable[[int], Client]


def malicious_ids(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    """The malicious clients: ``round(fraction * num_clients)`` ids drawn from the seed."""
    if not 0 <= fraction <= 1:
        raise ConfigError(f"attack.fraction must be in [0, 1], got {fraction}")
    k = round(fraction * num_clients)
    rng = np.random.default_rng([seed, 0xBAD])
    return frozenset(int(i) for i in rng.choice(num_clients, size=k, replace=False))


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s ``z_max``: ``s = floor(n/2 + 1) - f``, ``z = Phi^-1((n - s) / n)``."""
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    return NormalDist().inv_cdf(min(max(p, 1e-6), 1 - 1e-6))


def flip_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    return (num_classes - 1 - np.asarray(y, dtype=np.int64)).astype(np.int64)


@dataclass
class Attack:
    """One attack on a population: who is malicious and how each of them lies."""

    kind: str
    malicious: frozenset[int]
    num_classes: int
    seed: int = 0
    scale: float = 0.0
    noise_std: float = 1.0
    z: float = 0.0
    cohort: int = 10
    server_lr: float = 1.0
    colluders: int = 10
    population: int = 1
    _inner_fn: ClientFn | None = field(default=None, repr=False)
    _alie_cache: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ConfigError(f"attack.kind: {self.kind!r} is not one of {', '.join(ATTACKS)}")
        if self.scale < 0:
            raise ConfigError(f"attack.scale must be >= 0, got {self.scale}")
        if self.noise_std < 0:
            raise ConfigError(f"attack.noise_std must be >= 0, got {self.noise_std}")

    @property
    def boost(self) -> float:
        if self.kind == "sign-flip":
            return self.scale or 10.0
        return self.scale or self.cohort / self.server_lr

    def wrap(self, client_fn: ClientFn) -> ClientFn:
        """A client_fn that returns attacking clients for malicious ids, honest ones otherwise."""
        self._inner_fn = client_fn

        def wrapped(cid: int) -> Client:
            inner = client_fn(cid)
            if self.kind == "none" or cid not in self.malicious:
                return inner
            return AttackClient(inner, self)

        return wrapped

    def poisoned(self, client: Client) -> Client:
        if not isinstance(client, LearnerClient):
            raise ConfigError(f"attack.kind = {self.kind!r} needs clients with local arrays (LearnerClient)")
        d = client.data
        data = ClientData(d.x_train, flip_labels(d.y_train, self.num_classes), d.x_test, d.y_test)
        return LearnerClient(client.client_id, client.learner, data)

    def honest_stats(self, params: Params, cfg: TrainConfig, round_num: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the colluders' honest deltas this round (computed once per round)."""
        if round_num not in self._alie_cache:
            assert self._inner_fn is not None
            ids = sorted(self.malicious)[: self.colluders]
            rows = []
            for cid in ids:
                ctx = ClientContext(cid, round_num, client_rng(self.seed, round_num, cid, stream=7))
                res = self._inner_fn(cid).train(params, cfg, ctx)
                rows.append(flatten(sub(res.params, params), dtype=np.float64))
            x = np.stack(rows)
            self._alie_cache = {round_num: (x.mean(axis=0), x.std(axis=0))}
        return self._alie_cache[round_num]

    def train(self, inner: Client, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        spec = ParamSpec.of(params)
        if self.kind == "label-flip":
            return self.poisoned(inner).train(params, cfg, ctx)
        if self.kind == "gaussian":
            res = inner.train(params, cfg, ctx)
            noise = ctx.rng.normal(0.0, self.noise_std, size=spec.total)
            return replace(res, params=add(params, unflatten(noise, spec)))
        if self.kind == "alie":
            res = inner.train(params, cfg, ctx)
            mu, sigma = self.honest_stats(params, cfg, ctx.round_num)
            f = max(1, round(len(self.malicious) * self.cohort / max(1, self.population)))
            z = self.z or alie_z(self.cohort, f)
            return replace(res, params=add(params, unflatten(mu - z * sigma, spec)))
        res = (self.poisoned(inner) if self.kind == "scaling" else inner).train(params, cfg, ctx)
        delta = flatten(sub(res.params, params), dtype=np.float64)
        factor = -self.boost if self.kind == "sign-flip" else self.boost
        return replace(res, params=add(params, unflatten(factor * delta, spec)))

    def describe(self) -> dict[str, Any]:
        return {"attack": self.kind, "malicious": len(self.malicious)}


class AttackClient:
    """A malicious client: the honest client's data and model, a lying update."""

    def __init__(self, inner: Client, attack: Attack) -> None:
        self.client_id = inner.client_id
        self.inner = inner
        self.attack = attack

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        return self.attack.train(self.inner, params, cfg, ctx)

    def loss(self, params: Params) -> float:
        return self.inner.loss(params)

    def evaluate(self, params: Params) -> EvalResult:
        return self.inner.evaluate(params)


__all__ = ["ATTACKS", "Attack", "AttackClient", "alie_z", "flip_labels", "malicious_ids"]
