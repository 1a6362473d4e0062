"""Differential privacy for fedge: clipping, central (DP-FedAvg) and local DP, accounting.

Importing this package registers the ``[privacy]`` config section and its transform,
callback and round-policy factories. Accounting is done by Google's ``dp-accounting``
(RDP and PLD); see ``docs/privacy.md``.
"""

from fedge.privacy.accountant import Accountant, epsilon_for, plan_noise
from fedge.privacy.config import PoissonSampling, PrivacyBudget, PrivacyConfig
from fedge.privacy.mechanisms import clip_l1, clip_l2
from fedge.privacy.transforms import AdaptiveClipping, CentralDP, LocalDP

__all__ = [
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
