"""Privacy transforms of the update pipeline: clipping, central DP noise, local DP.

:class:`CentralDP` is DP-FedAvg (McMahan et al., ICLR 2018) as a pipeline transform:

* each client's delta is clipped to L2 norm ``C`` — in ``client()`` (the variant that
  composes with secure aggregation: the server never sees an unclipped update) or in
  ``server()``;
* ``aggregate()`` adds ``N(0, (z C)^2)`` to the summed deltas and replaces the summed
  weight with the expected number of clients ``m`` (fixed-denominator estimator), so
  the mean carries noise ``sigma = z C / m``; it then steps the accountant and reports
  ``epsilon``, ``delta``, ``noise_multiplier``, ``clip_norm`` and ``sampling`` in the
  round's record;
* with adaptive clipping (Andrew et al., NeurIPS 2021) every client also reports whether
  its norm was within ``C``; the noisy fraction moves ``C`` toward the target quantile.

:class:`LocalDP` adds Gaussian or Laplace noise on the client, before anything leaves it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedge.core.errors import AggregationError, ConfigError
from fedge.core.params import Params
from fedge.core.types import ClientContext, ClientUpdate
from fedge.pipeline import RoundContext, Transform
from fedge.privacy import mechanisms as mech
from fedge.privacy.accountant import Accountant
from fedge.strategies.aggregate import Terms

UNCLIPPED = "dp_unclipped"
"""Metric a clipped update carries: 1.0 when its norm was within the bound (adaptive clipping)."""


@dataclass
class AdaptiveClipping:
    """Andrew et al.'s quantile tracking: target quantile ``gamma``, step ``lr``, count noise ``sigma_b``."""

    target_quantile: float = 0.5
    lr: float = 0.2
    count_stddev: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.target_quantile <= 1:
            raise ConfigError(f"privacy.target_quantile must be in [0, 1], got {self.target_quantile}")
        if not self.lr > 0:
            raise ConfigError(f"privacy.clip_lr must be > 0, got {self.lr}")


@dataclass
class CentralDP(Transform):
    """Clip every update to ``clip_norm`` and add Gaussian noise ``z * C`` to the round's sum."""

    clip_norm: float
    noise_multiplier: float
    expected_clients: float
    accountant: Accountant | None = None
    delta: float = 1e-5
    clip_at: str = "server"
    adaptive: AdaptiveClipping | None = None
    name: str = "central_dp"
    noise_key: int | None = field(default=None, repr=False)
    """The secret the noise is drawn from (a served run's, kept in its server's state); None: the
    round's generator, derived from the run's seed, so a simulation is reproducible."""
    _counts: dict[int, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ConfigError(f"privacy.clip_norm must be > 0, got {self.clip_norm}")
        if not self.noise_multiplier > 0:
            raise ConfigError(f"privacy.noise_multiplier must be > 0 with DP on, got {self.noise_multiplier}")
        if not self.expected_clients > 0:
            raise ConfigError(f"expected clients per round must be > 0, got {self.expected_clients}")
        if self.clip_at not in ("client", "server"):
            raise ConfigError(f"privacy.clip_at must be 'client' or 'server', got {self.clip_at!r}")
        self.update_multiplier = (
            mech.split_noise(self.noise_multiplier, self.adaptive.count_stddev)
            if self.adaptive
            else self.noise_multiplier
        )

    def state_dict(self) -> dict[str, Any] | None:
        steps = self.accountant.steps if self.accountant is not None else []
        return {"clip_norm": self.clip_norm, "steps": [[z, n] for z, n in steps]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replay the stored rounds into a fresh accountant and take the stored clipping bound."""
        self.clip_norm = float(state["clip_norm"])
        if self.accountant is not None:
            if self.accountant.rounds:
                raise ConfigError("central DP: a checkpoint can only be restored into a fresh accountant")
            for z, n in state["steps"]:
                self.accountant.step(float(z), int(n))

    def noise_rng(self, rctx: RoundContext) -> np.random.Generator:
        """The generator of round ``rctx.round_num``'s noise.

        A node knows the run's seed (its config carries it), so noise drawn from the seed could be
        regenerated and subtracted by any node: a served run draws it from :attr:`noise_key`, a
        secret of its server, instead (:func:`fedge.deploy.server.keep_noise_secret`).
        """
        if self.noise_key is None:
            return rctx.rng
        return np.random.default_rng([self.noise_key, rctx.round_num])

    def _clip(self, update: ClientUpdate) -> ClientUpdate:
        if update.extras:
            raise ConfigError(
                "central DP cannot bound the sensitivity of updates with extra tensors "
                f"({', '.join(sorted(update.extras))})"
            )
        update.delta, norm = mech.clip_l2(update.delta, self.clip_norm)
        update.metrics[UNCLIPPED] = 1.0 if norm <= self.clip_norm else 0.0
        return update

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        return self._clip(update) if self.clip_at == "client" else update

    def server(self, update: ClientUpdate, rctx: RoundContext) -> ClientUpdate:
        if self.clip_at == "server":
            update = self._clip(update)
        if self.adaptive is not None:
            bit = update.metrics.get(UNCLIPPED)
            if bit is None:
                raise AggregationError(f"update from client {update.client_id} lacks its clipping bit")
            self._counts[rctx.round_num] = self._counts.get(rctx.round_num, 0.0) + float(bit)
        return update

    def aggregate(self, sums: Terms, rctx: RoundContext) -> Terms:
        unknown = set(sums) - {"delta", "weight"}
        if unknown:
            raise ConfigError(f"central DP cannot bound the sensitivity of terms {sorted(unknown)}")
        sigma = self.update_multiplier * self.clip_norm
        rng = self.noise_rng(rctx)
        noisy = [s + rng.normal(0.0, sigma, size=s.shape) for s in sums["delta"]]
        out: Terms = {"delta": noisy, "weight": [np.asarray([self.expected_clients], dtype=np.float64)]}
        info: dict[str, Any] = {
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "noise_stddev_mean": sigma / self.expected_clients,
        }
        if self.accountant is not None:
            self.accountant.step(self.noise_multiplier)
            info.update(
                epsilon=self.accountant.epsilon(self.delta),
                delta=self.delta,
                sampling=self.accountant.sampling,
                sampling_rate=self.accountant.sampling_rate,
                accountant=self.accountant.kind,
                dp_rounds=self.accountant.rounds,
            )
        if self.adaptive is not None:
            a = self.adaptive
            count = self._counts.pop(rctx.round_num, 0.0) + rng.normal(0.0, a.count_stddev)
            frac = count / self.expected_clients
            self.clip_norm = mech.adaptive_clip_update(self.clip_norm, frac, target_quantile=a.target_quantile, lr=a.lr)
            info.update(unclipped_fraction=frac, next_clip_norm=self.clip_norm)
        rctx.info.update(info)
        return out


@dataclass
class LocalDP(Transform):
    """Local DP on the client: each update is clipped and noised before it leaves the device.

    ``gaussian``: L2 clip to ``C``, noise ``N(0, sigma^2)`` per value with ``sigma``
    calibrated so one update is (ε, δ)-DP for replace-one (L2 sensitivity ``2C``).
    ``laplace``: L1 clip to ``C``, ``Laplace(2C / ε)`` per value: ε-DP (δ = 0).
    The guarantee is per client per round; rounds compose.
    """

    mechanism: str
    clip_norm: float
    epsilon: float
    delta: float = 1e-5
    name: str = "local_dp"

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ConfigError(f"privacy.clip_norm must be > 0, got {self.clip_norm}")
        if self.mechanism == "gaussian":
            self.scale = mech.gaussian_sigma(self.epsilon, self.delta, 2 * self.clip_norm)
        elif self.mechanism == "laplace":
            self.scale = mech.laplace_scale(self.epsilon, 2 * self.clip_norm)
        else:
            raise ConfigError(f"privacy.local_mechanism must be 'gaussian' or 'laplace', got {self.mechanism!r}")

    def noise(self, params: Params, rng: np.random.Generator) -> Params:
        if self.mechanism == "gaussian":
            clipped, _ = mech.clip_l2(params, self.clip_norm)
            return [(p + rng.normal(0.0, self.scale, size=p.shape)).astype(np.float32) for p in clipped]
        clipped, _ = mech.clip_l1(params, self.clip_norm)
        return [(p + rng.laplace(0.0, self.scale, size=p.shape)).astype(np.float32) for p in clipped]

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        update.delta = self.noise(update.delta, ctx.rng)
        return update

    def aggregate(self, sums: Terms, rctx: RoundContext) -> Terms:
        rctx.info.update(
            local_mechanism=self.mechanism,
            local_epsilon=self.epsilon,
            local_delta=self.delta if self.mechanism == "gaussian" else 0.0,
            local_noise_scale=self.scale,
        )
        return sums


__all__ = ["UNCLIPPED", "AdaptiveClipping", "CentralDP", "LocalDP"]
