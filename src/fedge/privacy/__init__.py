"""Differential privacy for fedge: clipping, central (DP-FedAvg) and local DP, accounting.

Its :data:`HOOKS` give :mod:`fedge.plugins` the ``[privacy]`` config section and its
transform (at the noise stage, before compression and masking), callback and
round-policy factories. Accounting is done by Google's ``dp-accounting``
(RDP and PLD); see ``docs/privacy.md``.
"""

from fedge.plugins import Hooks, Stage
from fedge.privacy.accountant import Accountant, epsilon_for, plan_noise
from fedge.privacy.config import (
    PoissonSampling,
    PrivacyBudget,
    PrivacyConfig,
    privacy_callbacks,
    privacy_policy,
    privacy_transforms,
)
from fedge.privacy.mechanisms import clip_l1, clip_l2
from fedge.privacy.transforms import AdaptiveClipping, CentralDP, LocalDP

HOOKS = Hooks(
    sections={"privacy": PrivacyConfig},
    transforms=[(Stage.NOISE, privacy_transforms)],
    callbacks=[privacy_callbacks],
    policy=privacy_policy,
)

__all__ = [
    "HOOKS",
    "Accountant",
    "AdaptiveClipping",
    "CentralDP",
    "LocalDP",
    "PoissonSampling",
    "PrivacyBudget",
    "PrivacyConfig",
    "clip_l1",
    "clip_l2",
    "epsilon_for",
    "plan_noise",
]
