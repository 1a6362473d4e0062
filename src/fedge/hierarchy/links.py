"""The hierarchy on the virtual clock: per-tier time, energy and bytes of every cloud round.

A :class:`HierarchyPolicy` is the run's :class:`~fedge.engine.RoundPolicy`: it leaves
selection to the sampler and, after each round, costs what the relays did (their
:class:`~fedge.hierarchy.relays.RelayTrace`) with the device cost model of
:mod:`fedge.devices.cost`:

* **LAN** (child <-> relay, in-vehicle Ethernet, one switched port per zone): each edge step
  lasts until the relay's slowest child has its model, trained and sent its update back;
  a child spends ``power_train`` while computing and ``power_comm`` while on the LAN.
* **WAN** (relay <-> cloud, the gateway's cellular link, shared by everything that crosses
  it): an aggregating relay receives the cloud's model once and sends one partial sum; a
  forwarding relay (flat FL over the same network) carries every child's model and update.
  The gateway spends ``power_comm`` while its links are busy.

A relay's round is ``WAN down + its edge steps + WAN up``; the cloud round lasts until the
slowest relay has reported, and the clock moves by that much. The round's
``uplink_bytes`` / ``downlink_bytes`` become the cloud link's, the LAN's go to ``record.extra``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.types import Metrics, TrainConfig
from fedge.devices.cost import ModelCost, samples_for_steps, transfer_s
from fedge.devices.profiles import DeviceProfile
from fedge.engine import RoundPolicy
from fedge.hierarchy.relays import ChildWork, HierarchyBackend, RelayTrace
from fedge.simulation.history import RoundRecord

IDLE_S = 60.0
"""How far the clock moves when no relay took part in a round."""

TIER_KEYS = (
    "lan_up_bytes",
    "lan_down_bytes",
    "wan_up_bytes",
    "wan_down_bytes",
    "device_energy_j",
    "gateway_energy_j",
    "sim_time_s",
)
"""The per-round figures :func:`tier_totals` sums over a run."""


@dataclass(frozen=True)
class Link:
    """One network hop: bandwidth in Mb/s and one-way latency in ms."""

    mbps: float
    latency_ms: float

    def seconds(self, nbytes: float) -> float:
        return transfer_s(nbytes, self.mbps, self.latency_ms) if nbytes > 0 else 0.0


@dataclass(frozen=True)
class RelayCost:
    """One relay's simulated round: seconds, joules per tier and bytes per link."""

    seconds: float
    device_j: float
    gateway_j: float
    lan_down: int
    lan_up: int
    wan_down: int
    wan_up: int


class HierarchyPolicy(RoundPolicy):
    """Per-tier accounting of the relays' rounds (see the module docstring)."""

    def __init__(
        self,
        backend: HierarchyBackend,
        *,
        device: DeviceProfile,
        gateway: DeviceProfile,
        model: ModelCost,
        sizes: npt.NDArray[np.int64] | list[int],
        train: TrainConfig,
        lan: Link,
        wan_up: Link,
        wan_down: Link,
        precision: str = "fp32",
    ) -> None:
        self.backend, self.device, self.gateway, self.model = backend, device, gateway, model
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.train, self.lan, self.wan_up, self.wan_down = train, lan, wan_up, wan_down
        self.flops = device.flops(precision)
        self.clock = 0.0

    def compute_s(self, cid: int, work: ChildWork) -> float:
        """Seconds child ``cid`` trains for the local steps it reported (all of its epochs when it reported none)."""
        n, b = int(self.sizes[cid]), self.train.batch_size
        steps = work.steps or self.train.epochs * -(-max(n, 1) // b)
        samples = samples_for_steps(steps, n, b)
        return self.model.train_flops(samples) / self.flops + steps * self.device.step_overhead_s

    def relay_cost(self, trace: RelayTrace) -> RelayCost:
        """The cost of one relay's round from its trace."""
        device_j = lan_busy = 0.0
        lan_down = lan_up = 0
        edge_s = 0.0
        for step in trace.steps:
            longest = 0.0
            for cid, w in step.items():
                comm = self.lan.seconds(w.down_bytes) + self.lan.seconds(w.up_bytes)
                compute = self.compute_s(cid, w)
                device_j += self.device.power_train_w * compute + self.device.power_comm_w * comm
                longest = max(longest, comm + compute)
                lan_busy += comm
                lan_down += w.down_bytes
                lan_up += w.up_bytes
            edge_s += longest
        wan_s = self.wan_down.seconds(trace.down_bytes) + self.wan_up.seconds(trace.up_bytes)
        gateway_j = self.gateway.power_comm_w * (wan_s + lan_busy)
        return RelayCost(edge_s + wan_s, device_j, gateway_j, lan_down, lan_up, trace.down_bytes, trace.up_bytes)

    def finish(self, round_num: int, record: RoundRecord, client_metrics: dict[int, Metrics]) -> None:
        costs = [self.relay_cost(t) for t in self.backend.trace]
        duration = max((c.seconds for c in costs), default=IDLE_S) if costs else IDLE_S
        self.clock += duration
        wan_up, wan_down = sum(c.wan_up for c in costs), sum(c.wan_down for c in costs)
        lan_up, lan_down = sum(c.lan_up for c in costs), sum(c.lan_down for c in costs)
        device_j, gateway_j = sum(c.device_j for c in costs), sum(c.gateway_j for c in costs)
        record.uplink_bytes, record.downlink_bytes = wan_up, wan_down
        record.extra.update(
            {
                "relays": len(costs),
                "edge_steps": self.backend.kappa1,
                "lan_up_bytes": lan_up,
                "lan_down_bytes": lan_down,
                "wan_up_bytes": wan_up,
                "wan_down_bytes": wan_down,
                "lan_bytes": lan_up + lan_down,
                "wan_bytes": wan_up + wan_down,
                "sim_time_s": duration,
                "sim_clock_s": self.clock,
                "device_energy_j": device_j,
                "gateway_energy_j": gateway_j,
                "energy_j": device_j,
            }
        )


def tier_totals(records: Iterable[Any]) -> dict[str, float] | None:
    """A run's per-tier totals (bytes per link, joules per tier, simulated seconds); None for a flat run."""
    rows = [r.extra for r in records if "wan_bytes" in getattr(r, "extra", {})]
    if not rows:
        return None
    out = {k: float(sum(float(e.get(k, 0.0)) for e in rows)) for k in TIER_KEYS}
    out["lan_bytes"] = out["lan_up_bytes"] + out["lan_down_bytes"]
    out["wan_bytes"] = out["wan_up_bytes"] + out["wan_down_bytes"]
    out["sim_clock_s"] = float(rows[-1].get("sim_clock_s", math.nan))
    return out
