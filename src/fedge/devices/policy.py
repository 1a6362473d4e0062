"""The device simulation as a :class:`~fedge.engine.RoundPolicy`: a virtual clock.

Each round: who is online at the current simulated time (availability) and whose model
fits in memory; who is selected (uniform, by data size, fastest-first, Oort); who trains
how much under the round policy; then how long the round took and what it cost.

Round policies (FedScale's, Lai et al. ICML 2022, and FedProx's, Li et al. MLSys 2020):

``wait_all``    the round lasts until the slowest selected client has reported;
``deadline``    clients predicted to miss ``deadline_s`` are dropped (not trained) and the
                round lasts until the deadline (or the last report, if earlier);
``overcommit``  ``ceil(overcommit * K)`` clients are selected, the first ``K`` to finish
                are kept; the round lasts until the ``K``-th report;
``partial``     every client works until the deadline and sends what it has: stragglers
                train only the steps that fit (FedProx's variable local work).

Stragglers in FedProx's sense (``straggler_fraction`` of the cohort can only do a random
1..E epochs this round) are kept with their partial work under ``partial`` and dropped under
every other policy (FedAvg's behaviour). Clients whose result would be discarded are not
trained. Mid-round dropouts (``dropout``: probability per client per round) leave at a
uniform point of their work. The clock advances by each round's simulated duration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.core.errors import ConfigError
from fedge.core.types import Metrics, TrainConfig
from fedge.devices.availability import AlwaysOn, Availability
from fedge.devices.cost import ClientCost, ModelCost, client_cost, samples_for_steps
from fedge.devices.profiles import Fleet
from fedge.devices.selection import SELECTIONS, Oort, select_fastest, select_uniform, select_weighted
from fedge.engine import RoundPlan, RoundPolicy
from fedge.simulation.history import RoundRecord
from fedge.simulation.sampling import Sampling

POLICIES = ("wait_all", "deadline", "overcommit", "partial")
IDLE_S = 60.0
"""How far the clock moves when nobody could take part in a round."""

F64 = npt.NDArray[np.float64]


@dataclass
class _RoundState:
    k: int = 0
    online: int = 0
    trained: tuple[int, ...] = ()
    cut: bool = False
    wasted_j: float = 0.0
    late_s: float = 0.0
    selected: int = 0


class DevicePolicy(RoundPolicy):
    """Simulated devices behind the round loop; see the module docstring."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        model: ModelCost,
        sizes: npt.NDArray[np.int64],
        train: TrainConfig,
        policy: str = "wait_all",
        deadline_s: float = 0.0,
        overcommit: float = 1.3,
        selection: str = "uniform",
        availability: Availability | None = None,
        dropout: float = 0.0,
        straggler_fraction: float = 0.0,
        precision: str = "fp32",
        oort: Oort | None = None,
        seed: int = 0,
        client_models: list[ModelCost] | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"devices.policy: {policy!r} is not one of {', '.join(POLICIES)}")
        if selection not in SELECTIONS:
            raise ConfigError(f"devices.selection: {selection!r} is not one of {', '.join(SELECTIONS)}")
        if deadline_s < 0:
            raise ConfigError(f"devices.deadline_s must be >= 0 (0 = no deadline), got {deadline_s}")
        if overcommit < 1:
            raise ConfigError(f"devices.overcommit must be >= 1, got {overcommit}")
        if not 0 <= dropout < 1 or not 0 <= straggler_fraction <= 1:
            raise ConfigError("devices.dropout must be in [0, 1) and devices.straggler_fraction in [0, 1]")
        if len(fleet) != len(sizes):
            raise ConfigError(f"the fleet has {len(fleet)} devices but the federation {len(sizes)} clients")
        if client_models is not None and len(client_models) != len(fleet):
            raise ConfigError(f"{len(client_models)} client models for a fleet of {len(fleet)} devices")
        self.fleet, self.model, self.train = fleet, model, train
        self.client_models = client_models
        """Each client's own model (HeteroFL's sub-models): memory, FLOPs and bytes per client."""
        models = client_models or [model] * len(fleet)
        self._tflops = np.array([m.train_flops(1) for m in models], dtype=np.float64)
        self._pbytes = np.array([m.param_bytes for m in models], dtype=np.float64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.policy, self.deadline_s, self.overcommit = policy, float(deadline_s), float(overcommit)
        self.selection, self.dropout, self.straggler_fraction = selection, dropout, straggler_fraction
        self.availability: Availability = availability or AlwaysOn()
        self.oort = oort if oort is not None else (Oort() if selection == "oort" else None)
        self.precision, self.seed = precision, seed
        self.clock = 0.0
        self.down_bytes = float(model.param_bytes)
        self.up_bytes = float(model.param_bytes)
        profs = fleet.profiles
        self._flops = np.array([p.flops(precision) for p in profs]) * fleet.speed
        self._overhead = np.array([p.step_overhead_s for p in profs]) / fleet.speed
        self._down = np.array([p.downlink_mbps for p in profs]) * 1e6 / 8
        self._up = np.array([p.uplink_mbps for p in profs]) * 1e6 / 8
        self._lat = np.array([p.latency_ms for p in profs]) / 1000
        self._p_train = np.array([p.power_train_w for p in profs])
        self._p_comm = np.array([p.power_comm_w for p in profs])
        per_epoch = -(-np.maximum(self.sizes, 1) // train.batch_size)
        self._per_epoch = per_epoch
        self._full_steps = per_epoch * train.epochs
        if train.max_steps is not None:
            self._full_steps = np.minimum(self._full_steps, train.max_steps)
        need = [m.memory_bytes(train.batch_size, momentum=train.momentum > 0) / 2**20 for m in models]
        self.ineligible = {
            c: f"memory: needs {need[c]:.1f} MiB, {p.name} has {p.ram_mib:g} MiB"
            for c, p in enumerate(profs)
            if need[c] > p.ram_mib
        }
        self._eligible = [c for c in range(len(profs)) if c not in self.ineligible]
        self._r = _RoundState()

    def _samples(self, ids: npt.NDArray[np.int64], steps: npt.NDArray[np.int64]) -> F64:
        n, b = self.sizes[ids], self.train.batch_size
        per = self._per_epoch[ids]
        full, rest = np.divmod(steps, per)
        out: F64 = (full * n + np.minimum(rest * b, n)).astype(np.float64)
        return out

    def phases(
        self,
        ids: npt.NDArray[np.int64],
        steps: npt.NDArray[np.int64] | None = None,
        up_bytes: F64 | float | None = None,
    ) -> tuple[F64, F64, F64]:
        """Predicted (download, compute, upload) seconds of ``ids`` doing ``steps`` steps."""
        steps = self._full_steps[ids] if steps is None else steps
        own = self.client_models is not None
        up = (self._pbytes[ids] if own else self.up_bytes) if up_bytes is None else up_bytes
        compute = self._tflops[ids] * self._samples(ids, steps) / self._flops[ids] + steps * self._overhead[ids]
        down = (self._pbytes[ids] if own else self.down_bytes) / self._down[ids] + self._lat[ids]
        upload = up / self._up[ids] + self._lat[ids]
        return down, compute, upload

    def predicted_time(self, ids: list[int] | npt.NDArray[np.int64]) -> F64:
        """Predicted full-work round time of each of ``ids``."""
        a = np.asarray(ids, dtype=np.int64)
        d, c, u = self.phases(a)
        return d + c + u

    def cost(self, cid: int, steps: int, up_bytes: float) -> ClientCost:
        """The cost of what ``cid`` really did (from its reported steps and uplink bytes)."""
        prof = self.fleet.profiles[cid]
        samples = samples_for_steps(steps, int(self.sizes[cid]), self.train.batch_size)
        return client_cost(
            prof,
            float(self.fleet.speed[cid]),
            self.model if self.client_models is None else self.client_models[cid],
            samples=samples,
            steps=steps,
            down_bytes=self.down_bytes if self.client_models is None else float(self._pbytes[cid]),
            up_bytes=up_bytes,
            precision=self.precision,
        )

    def available(self, round_num: int, ids: list[int]) -> list[int]:
        allowed = set(ids)
        online = self.availability.online([c for c in self._eligible if c in allowed], self.clock)
        self._r = _RoundState(online=len(online))
        return online

    def select(self, round_num: int, available: list[int], sampling: Sampling, rng: np.random.Generator) -> list[int]:
        if not available:
            return []
        k = sampling.how_many(len(available))
        self._r.k = k
        if self.policy == "overcommit":
            k = min(len(available), math.ceil(self.overcommit * k))
        if self.selection == "uniform":
            return select_uniform(available, k, rng)
        if self.selection == "weighted":
            return select_weighted(available, k, self.sizes, rng)
        times = dict(zip(available, self.predicted_time(available).tolist(), strict=True))
        if self.selection == "fastest":
            return select_fastest(available, k, times)
        assert self.oort is not None
        return self.oort.select(round_num, available, k, times, rng)

    def plan(self, round_num: int, selected: list[int], rng: np.random.Generator) -> RoundPlan:
        r = self._r
        r.selected = len(selected)
        if not selected:
            return RoundPlan(train=[])
        prng = np.random.default_rng([self.seed, round_num, 0xDE71CE])
        ids = np.asarray(selected, dtype=np.int64)
        down, compute, upload = self.phases(ids)
        total = down + compute + upload
        dropped: dict[str, list[int]] = {}
        overrides: dict[int, dict[str, Any]] = {}
        keep = np.ones(len(ids), dtype=bool)
        wasted = 0.0
        leave = prng.random(len(ids)) < self.dropout
        left_at = prng.random(len(ids)) * total
        for i in np.flatnonzero(leave):
            dropped.setdefault("dropout", []).append(int(ids[i]))
            wasted += float(left_at[i] * self._p_train[ids[i]])
            r.late_s = max(r.late_s, float(left_at[i]))
        keep &= ~leave
        steps = self._full_steps[ids].copy()
        n_strag = round(self.straggler_fraction * len(ids))
        if n_strag:
            strag = prng.choice(len(ids), size=n_strag, replace=False)
            epochs = prng.integers(1, self.train.epochs + 1, size=n_strag)
            for i, e in zip(strag, epochs, strict=True):
                if not keep[i]:
                    continue
                s = min(int(steps[i]), int(e * self._per_epoch[ids[i]]))
                if self.policy == "partial":
                    steps[i] = s
                else:
                    keep[i] = False
                    dropped.setdefault("straggler", []).append(int(ids[i]))
                    part = self.phases(ids[i : i + 1], np.array([s]))[1][0]
                    wasted += float(part * self._p_train[ids[i]] + down[i] * self._p_comm[ids[i]])
            down, compute, upload = self.phases(ids, steps)
            total = down + compute + upload
        dl = self.deadline_s
        if self.policy == "deadline" and dl > 0:
            for i in np.flatnonzero(keep & (total > dl)):
                keep[i] = False
                r.cut = True
                dropped.setdefault("deadline", []).append(int(ids[i]))
                busy = max(dl - down[i], 0.0)
                wasted += float(busy * self._p_train[ids[i]] + min(down[i], dl) * self._p_comm[ids[i]])
        elif self.policy == "partial" and dl > 0:
            per_step = compute / np.maximum(steps, 1)
            for i in np.flatnonzero(keep & (total > dl)):
                fit = int((dl - down[i] - upload[i]) // per_step[i]) if per_step[i] > 0 else 0
                if fit < 1:
                    keep[i] = False
                    dropped.setdefault("deadline", []).append(int(ids[i]))
                    busy = max(dl - down[i], 0.0)
                    wasted += float(busy * self._p_train[ids[i]] + min(down[i], dl) * self._p_comm[ids[i]])
                else:
                    steps[i] = min(int(steps[i]), fit)
                r.cut = True
        elif self.policy == "overcommit":
            cand = np.flatnonzero(keep)
            order = cand[np.argsort(total[cand], kind="stable")]
            late = order[r.k :]
            if len(late):
                end = float(total[order[r.k - 1]])
                for i in late:
                    keep[i] = False
                    dropped.setdefault("over-committed", []).append(int(ids[i]))
                    wasted += float(min(end, total[i]) * self._p_train[ids[i]])
        for i in np.flatnonzero(keep):
            if steps[i] < self._full_steps[ids[i]]:
                overrides[int(ids[i])] = {"max_steps": int(steps[i])}
        r.trained = tuple(int(c) for c in ids[keep])
        r.wasted_j = wasted
        return RoundPlan(train=list(r.trained), dropped=dropped, overrides=overrides)

    def finish(self, round_num: int, record: RoundRecord, client_metrics: dict[int, Metrics]) -> None:
        r = self._r
        if r.trained:
            self.down_bytes = record.downlink_bytes / len(r.trained)
        times: dict[int, float] = {}
        energy = r.wasted_j
        observed: dict[int, tuple[float, float, float]] = {}
        for cid, m in client_metrics.items():
            up = float(m.get("uplink_bytes", self.up_bytes))
            steps = int(m.get("steps", self._full_steps[cid]))
            c = self.cost(cid, steps, up)
            times[cid] = c.total_s
            energy += c.energy_j
            observed[cid] = (
                float(m.get("num_examples", self.sizes[cid])),
                float(m.get("train_loss", math.nan)),
                c.total_s,
            )
        ups = [float(m["uplink_bytes"]) for m in client_metrics.values() if "uplink_bytes" in m]
        if ups:
            self.up_bytes = float(np.mean(ups))
        longest = max([*times.values(), r.late_s], default=0.0)
        if r.cut and self.deadline_s > 0:
            duration = self.deadline_s
        elif r.selected == 0:
            duration = IDLE_S
        else:
            duration = longest
        if self.oort is not None and observed:
            self.oort.observe(round_num, observed)
        self.clock += duration
        mix: dict[str, int] = {}
        for cid in client_metrics:
            name = self.fleet.profiles[cid].name
            mix[name] = mix.get(name, 0) + 1
        record.extra.update(
            {
                "device_mix": mix,
                "sim_time_s": duration,
                "sim_clock_s": self.clock,
                "energy_j": energy,
                "energy_wasted_j": r.wasted_j,
                "online": r.online,
                "ineligible": len(self.ineligible),
            }
        )
