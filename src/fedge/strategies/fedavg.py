"""FedAvg: McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017.

The new global model is the global model plus ``server_lr`` times the weighted mean of
the client deltas (weights: local example counts, or uniform).
"""

from __future__ import annotations

from typing import ClassVar

from fedge.strategies.base import Strategy


class FedAvg(Strategy):
    name: ClassVar[str] = "fedavg"
