"""HeteroFL width selection against hand-computed budgets; the config wiring and its refusals."""

from __future__ import annotations

import pytest

from fedge.config.schema import from_dict
from fedge.core.errors import ConfigError
from fedge.core.types import TrainConfig
from fedge.devices.cost import ModelCost
from fedge.devices.profiles import DeviceProfile
from fedge.devices.widths import choose_widths

COSTS = {
    1.0: ModelCost(forward_flops=40_000, num_params=200_000, activations=1_000),
    0.5: ModelCost(forward_flops=10_000, num_params=50_000, activations=500),
    0.25: ModelCost(forward_flops=2_000, num_params=10_000, activations=250),
}


def _profile(name: str, ram_mib: float, flops: float, mbps: float) -> DeviceProfile:
    return DeviceProfile(
        name=name,
        flops_fp32=flops,
        ram_mib=ram_mib,
        uplink_mbps=mbps,
        downlink_mbps=mbps,
        latency_ms=0.0,
        power_train_w=1.0,
        power_comm_w=1.0,
    )


def test_each_client_gets_the_widest_width_its_memory_and_deadline_allow() -> None:
    small = _profile("small", ram_mib=1.0, flops=1e6, mbps=1.0)
    big = _profile("big", ram_mib=4.0, flops=1e9, mbps=100.0)
    tiny = _profile("tiny", ram_mib=0.01, flops=1e9, mbps=100.0)
    train = TrainConfig(epochs=1, batch_size=10)
    chosen, left_out = choose_widths([small, big, tiny], [1.0] * 3, [20] * 3, train, COSTS, deadline_s=3.0)
    # small: width 1 needs 2*4*200000 + 10*1000*4 = 1,640,000 B = 1.56 MiB > 1 MiB;
    # width 1/2 fits (0.40 MiB) but its round is 3*10000*20/1e6 = 0.6 s of compute
    # + 2 * 50000*4*8/1e6 = 3.2 s of transfer = 3.8 s > 3 s; width 1/4: 0.12 + 0.64 = 0.76 s.
    # big: width 1 takes 0.0024 + 2 * 0.064 s. tiny: even width 1/4 needs 90,000 B = 0.086 MiB.
    assert chosen == {0: 0.25, 1: 1.0}
    assert list(left_out) == [2] and left_out[2].startswith("memory: needs 0.1 MiB, tiny has 0.01 MiB")
    no_deadline, _ = choose_widths([small], [1.0], [20], train, COSTS)
    assert no_deadline == {0: 0.5}
    slower, _ = choose_widths([small], [0.5], [20], train, COSTS, deadline_s=0.8)
    assert slower == {}  # at half speed the 1/4 model computes 0.24 s: 0.88 s > 0.8 s


def _heterofl(**devices: object) -> dict[str, object]:
    return {
        "rounds": 1,
        "data": {"num_clients": 8},
        "model": {"name": "mlp", "hidden": [64]},
        "strategy": {"name": "heterofl"},
        "training": {"clients_per_round": 4, "local_epochs": 1},
        "devices": {"enabled": True, "fleet": {"pi-zero-2w": 0.5, "orin-nano": 0.5}, **devices},
    }


def test_a_configured_heterofl_run_gives_narrow_devices_narrow_models() -> None:
    from fedge.federation import build, execute

    built = build(from_dict(_heterofl(policy="deadline", deadline_s=0.12)))
    widths = built.strategy.widths  # type: ignore[attr-defined]
    assert set(widths) == set(range(8)) and min(widths.values()) < 1.0 and max(widths.values()) == 1.0
    result = execute(built)
    assert result.history.rounds[0].participants >= 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**_heterofl(), "devices": {"enabled": False}}, "set \\[devices\\] enabled = true"),
        ({**_heterofl(), "training": {"backend": "vectorized", "clients_per_round": 4}}, "vectorized"),
        ({**_heterofl(), "model": {"name": "logreg"}}, "model.name = 'mlp' or 'cnn'"),
    ],
)
def test_impossible_heterofl_runs_are_refused_with_one_line(raw: dict[str, object], message: str) -> None:
    from fedge.federation import build

    with pytest.raises(ConfigError, match=message):
        build(from_dict(raw))


def test_a_deployed_partial_update_run_builds_and_refuses_secure_aggregation_in_one_line() -> None:
    from fedge.federation import build

    raw = {"rounds": 1, "data": {"num_clients": 4}, "strategy": {"name": "fedrep"}}
    assert build(from_dict(raw), deployed=True).strategy.partial_updates
    with pytest.raises(ConfigError, match="sends part of the model per client, which secagg cannot"):
        build(from_dict({**_heterofl(), "secagg": {"enabled": True}}), deployed=True)
