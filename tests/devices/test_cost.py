import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedge.clients.numpy_models import NumpyMLP
from fedge.core.errors import ModelError
from fedge.devices.cost import client_cost, count_learner, count_mlp, count_torch, samples_for_steps
from fedge.devices.profiles import builtin_catalog


def test_linear_layer_flops_by_hand():
    cost = count_torch(nn.Sequential(nn.Flatten(), nn.Linear(60, 10)), (60,))
    assert cost.forward_flops == 2 * 60 * 10 + 10
    assert cost.num_params == 610


def test_conv_layer_flops_by_hand():
    # 3->8 channels, 3x3 kernel, stride 1, no padding on 10x10: 8x8 outputs per channel
    cost = count_torch(nn.Conv2d(3, 8, 3), (3, 10, 10))
    assert cost.forward_flops == 8 * 8 * 8 * (2 * 3 * 3 * 3 + 1)
    strided = count_torch(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False), (4, 9, 9))
    assert strided.forward_flops == 6 * 5 * 5 * (2 * 2 * 3 * 3)


def test_torch_and_numpy_mlp_agree():
    torch.manual_seed(0)
    mod = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    assert count_torch(mod, (64,)).forward_flops == count_mlp([64, 32, 10]).forward_flops
    assert count_learner(NumpyMLP(64, 10, (32,)), (64,)) == count_mlp([64, 32, 10])


def test_unknown_parametrised_layer_is_refused():
    with pytest.raises(ModelError, match="cannot count the FLOPs of layer LSTM"):
        count_torch(nn.LSTM(4, 4), (3, 4))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), b=st.integers(1, 32), steps=st.integers(0, 100))
def test_samples_for_steps(n, b, steps):
    per_epoch = -(-n // b)
    s = samples_for_steps(steps, n, b)
    assert s == sum(min(b, n - (i % per_epoch) * b) for i in range(steps))


def test_client_cost_by_hand():
    p = builtin_catalog()["pi4"]
    model = count_mlp([60, 10])
    c = client_cost(p, 2.0, model, samples=100, steps=10, down_bytes=1e6, up_bytes=5e5)
    flops = 3 * (2 * 60 * 10 + 10) * 100
    assert c.compute_s == pytest.approx(flops / (p.flops_fp32 * 2) + 10 * p.step_overhead_s / 2)
    assert c.download_s == pytest.approx(8e6 / (p.downlink_mbps * 1e6) + p.latency_ms / 1000)
    assert c.upload_s == pytest.approx(4e6 / (p.uplink_mbps * 1e6) + p.latency_ms / 1000)
    assert c.energy_j == pytest.approx(p.power_train_w * c.compute_s + p.power_comm_w * c.comm_s)


def test_memory_counts_optimizer_state():
    m = count_mlp([100, 50, 10])
    assert m.memory_bytes(8, momentum=True) - m.memory_bytes(8, momentum=False) == m.param_bytes
    assert m.memory_bytes(16, momentum=False) - m.memory_bytes(8, momentum=False) == 8 * m.activations * 4
    assert np.isclose(m.param_bytes, 4 * (100 * 50 + 50 + 50 * 10 + 10))
