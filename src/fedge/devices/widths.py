"""HeteroFL width selection: the widest sub-model each device can train within its budgets.

A client on profile ``p`` (speed multiplier ``s``) can take width ratio ``r`` when the
sub-model's training memory (parameters, gradients, momentum buffer and a batch of
activations, :meth:`~fedge.devices.cost.ModelCost.memory_bytes`) fits ``p.ram_mib`` and,
with a round deadline, its full round (download, ``epochs`` of local training, upload;
:func:`~fedge.devices.cost.client_cost`) ends within it. Each client gets the largest such
ratio; a client that no ratio fits is left out, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedge.core.errors import ConfigError
from fedge.core.types import TrainConfig
from fedge.devices.cost import ModelCost, client_cost, samples_for_steps
from fedge.devices.profiles import DeviceProfile


def full_steps(n: int, train: TrainConfig) -> int:
    """Local steps of a full round on ``n`` examples."""
    steps = train.epochs * max(1, -(-n // train.batch_size))
    return steps if train.max_steps is None else min(steps, train.max_steps)


def fits(
    profile: DeviceProfile,
    speed: float,
    model: ModelCost,
    n: int,
    train: TrainConfig,
    *,
    deadline_s: float = 0.0,
    precision: str = "fp32",
) -> str | None:
    """Why ``model`` does not fit this device for a round on ``n`` examples, or None when it does."""
    need = model.memory_bytes(train.batch_size, momentum=train.momentum > 0) / 2**20
    if need > profile.ram_mib:
        return f"memory: needs {need:.1f} MiB, {profile.name} has {profile.ram_mib:g} MiB"
    if deadline_s > 0:
        steps = full_steps(n, train)
        cost = client_cost(
            profile,
            speed,
            model,
            samples=samples_for_steps(steps, n, train.batch_size),
            steps=steps,
            down_bytes=model.param_bytes,
            up_bytes=model.param_bytes,
            precision=precision,
        )
        if cost.total_s > deadline_s:
            return f"deadline: a round takes {cost.total_s:.3g} s on {profile.name}, the deadline is {deadline_s:g} s"
    return None


def choose_widths(
    profiles: Sequence[DeviceProfile],
    speed: Sequence[float],
    sizes: Sequence[int],
    train: TrainConfig,
    costs: Mapping[float, ModelCost],
    *,
    deadline_s: float = 0.0,
    precision: str = "fp32",
) -> tuple[dict[int, float], dict[int, str]]:
    """Each client's largest fitting width ratio, and why the clients no ratio fits are left out.

    ``costs`` maps each candidate ratio to its sub-model's cost; the reason given for a client
    left out is the one of the smallest ratio.
    """
    if not costs:
        raise ConfigError("heterofl.ratios: give at least one width ratio")
    if not len(profiles) == len(speed) == len(sizes):
        raise ConfigError(f"{len(profiles)} profiles, {len(speed)} speeds and {len(sizes)} client sizes differ")
    ratios = sorted(costs, reverse=True)
    chosen: dict[int, float] = {}
    left_out: dict[int, str] = {}
    for cid, (prof, s, n) in enumerate(zip(profiles, speed, sizes, strict=True)):
        reason: str | None = None
        for r in ratios:
            reason = fits(prof, float(s), costs[r], int(n), train, deadline_s=deadline_s, precision=precision)
            if reason is None:
                chosen[cid] = r
                break
        if reason is not None:
            left_out[cid] = reason
    return chosen, left_out
