"""The ``[robust]`` and ``[attack]`` config sections and how an experiment uses them.

``[robust]`` holds the hyperparameters of the robust strategies (chosen with
``[strategy] name = "krum"`` ...). ``[attack]`` makes a seed-chosen share of the
population malicious; every round's record is labelled with the attack and the
defence (the strategy), so result tables can be read without the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedge.config.schema import Experiment, opt
from fedge.core.errors import ConfigError
from fedge.engine import Callback
from fedge.robust.attacks import ATTACKS, Attack, malicious_ids
from fedge.simulation.history import RoundRecord
from fedge.strategies import lookup
from fedge.strategies.base import StrategyState

if TYPE_CHECKING:
    from fedge.data.federated import FederatedDataset
    from fedge.federation import BuildContext, Federation
    from fedge.transport.inprocess import ClientFn


@dataclass
class RobustConfig:
    byzantine: int = opt(
        -1,
        "krum, multi-krum, bulyan: Byzantine updates f tolerated per round "
        "(-1 = the most the round's n allows: (n-3)//2, bulyan (n-3)//4)",
        min=-1,
    )
    trim_fraction: float = opt(0.1, "trimmed-mean: share of values dropped at each end, in [0, 0.5)", min=0)
    multi_krum_m: int = opt(0, "multi-krum: updates averaged (0 = n - f)", min=0)
    norm_bound: float = opt(0.0, "norm-bound: clip every update to this L2 norm (0 = the median norm)", min=0)
    clip_tau: float = opt(0.0, "centered-clip: clipping radius tau (0 = the median distance to the centre)", min=0)
    clip_iters: int = opt(1, "centered-clip: clipping iterations per round", min=1)


@dataclass
class AttackConfig:
    kind: str = opt("none", "simulated attack by the malicious clients", choices=ATTACKS)
    fraction: float = opt(0.2, "share of the population that is malicious (chosen from the seed)", min=0, max=1)
    scale: float = opt(
        0.0, "sign-flip: send -scale x delta (0 = 10); scaling: boost gamma (0 = clients per round / server_lr)", min=0
    )
    noise_std: float = opt(1.0, "gaussian: standard deviation of the random update", min=0)
    alie_z: float = opt(0.0, "alie: z of mu - z sigma (0 = Baruch et al.'s z_max)", min=0)
    colluders: int = opt(10, "alie: malicious clients whose honest updates estimate mu and sigma", min=1)


def _secagg_enabled(exp: Experiment) -> bool:
    """Whether the experiment's ``[secagg]`` section (fedge.secagg) is switched on."""
    return bool(getattr(exp.extensions.get("secagg"), "enabled", False))


def check_robust(exp: Experiment, ctx: BuildContext | None = None) -> None:
    """Refuse combinations a robust strategy cannot honour (the part's ``validate``; it adds no transforms)."""
    if ctx is None:
        from fedge import federation

        ctx = federation.BuildContext.from_config(exp)
    cls = lookup(exp.strategy.name)
    if cls is None or not cls.needs_individual_updates:
        return
    if _secagg_enabled(exp):
        raise ConfigError(
            f"strategy {exp.strategy.name!r} needs every individual update, which secure aggregation "
            "hides; disable [secagg] or use a streaming strategy such as fedavg"
        )
    r: RobustConfig = exp.section("robust")
    if not 0 <= r.trim_fraction < 0.5:
        raise ConfigError(f"robust.trim_fraction must be in [0, 0.5), got {r.trim_fraction}")
    n = ctx.cohort
    if r.byzantine >= 0:
        need = {"krum": 2 * r.byzantine + 3, "multi-krum": 2 * r.byzantine + 3, "bulyan": 4 * r.byzantine + 3}.get(
            exp.strategy.name
        )
        if need is not None and n < need:
            raise ConfigError(
                f"{exp.strategy.name} with robust.byzantine = {r.byzantine} needs at least {need} "
                f"clients per round, but a round selects {n}"
            )
    return


class AttackLabels(Callback):
    """Labels every round's record with the attack and the defence."""

    def __init__(self, attack: Attack, defence: str) -> None:
        self.attack = attack
        self.defence = defence

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        record.extra["attack"] = self.attack.kind
        record.extra["defence"] = self.defence
        record.extra["malicious_clients"] = len(self.attack.malicious)


def build_attack(exp: Experiment, num_clients: int, num_classes: int) -> Attack:
    a: AttackConfig = exp.section("attack")
    mal = malicious_ids(num_clients, a.fraction, exp.seed) if a.kind != "none" else frozenset()
    from fedge.simulation.sampling import cohort_size

    cohort = cohort_size(exp.training, num_clients)
    return Attack(
        kind=a.kind,
        malicious=mal,
        num_classes=num_classes,
        seed=exp.seed,
        scale=a.scale,
        noise_std=a.noise_std,
        z=a.alie_z,
        cohort=cohort,
        server_lr=exp.strategy.server_lr,
        colluders=a.colluders,
        population=num_clients,
    )


def attack_clients(exp: Experiment, data: FederatedDataset, client_fn: ClientFn) -> ClientFn:
    """Turn the configured share of clients malicious (simulation only)."""
    if "attack" not in exp.extensions:
        return client_fn
    attack = build_attack(exp, data.num_clients, data.num_classes)
    return client_fn if attack.kind == "none" else attack.wrap(client_fn)


def attack_callbacks(exp: Experiment, built: Federation) -> Sequence[Callback]:
    """Label every round's record with the attack and the defence."""
    if "attack" not in exp.extensions or built.data is None:
        return []
    data = built.data
    return [AttackLabels(build_attack(exp, data.num_clients, data.num_classes), exp.strategy.name)]


__all__ = ["AttackConfig", "AttackLabels", "RobustConfig", "attack_callbacks", "build_attack", "check_robust"]
