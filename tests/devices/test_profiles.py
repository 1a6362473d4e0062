import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import ConfigError
from fedge.devices.profiles import assign_fleet, builtin_catalog, catalog, load_profiles, lookup, parse_mix

REQUIRED_DEVICES = (
    "pi-zero-2w",
    "pi4",
    "pi5",
    "jetson-nano",
    "orin-nano",
    "agx-orin",
    "zonal-ecu",
    "phone-mid",
    "phone-flagship",
    "laptop-cpu",
)


def test_catalog_has_the_required_classes_with_sources():
    cat = builtin_catalog()
    for name in REQUIRED_DEVICES:
        assert cat[name].source
        assert cat[name].flops_fp32 > 0
    assert cat["agx-orin"].flops_fp32 > 100 * cat["pi-zero-2w"].flops_fp32


def test_unknown_device_lists_close_matches():
    with pytest.raises(ConfigError, match=r"unknown device 'pi-4'.*'pi4'"):
        lookup("pi-4", builtin_catalog())


def test_mix_must_sum_to_one():
    with pytest.raises(ConfigError, match=r"sum to 1, they sum to 0\.9"):
        parse_mix({"pi4": 0.5, "pi5": 0.4}, builtin_catalog())


def test_user_file_adds_profiles_and_missing_fields_are_named(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text(
        "[my-board]\nflops_fp32 = 3e9\nram_mib = 512\nuplink_mbps = 5\n"
        "downlink_mbps = 10\nlatency_ms = 40\npower_train_w = 2\n"
    )
    cat = catalog(good)
    assert cat["my-board"].power_comm_w == 1.0
    assert "pi4" in cat
    bad = tmp_path / "bad.toml"
    bad.write_text("[half]\nflops_fp32 = 3e9\nram_mib = 512\n")
    with pytest.raises(ConfigError, match=r"bad.toml: device 'half' is missing field\(s\) uplink_mbps"):
        load_profiles(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text(good.read_text() + "flop_int8 = 1e9\n")
    with pytest.raises(ConfigError, match="did you mean 'flops_int8'"):
        load_profiles(typo)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), a=st.floats(0.05, 0.9), seed=st.integers(0, 2**16))
def test_fleet_counts_follow_the_mix(n, a, seed):
    cat = builtin_catalog()
    mix = parse_mix({"pi4": a, "pi5": 1 - a}, cat)
    fleet = assign_fleet(mix, n, np.random.default_rng(seed), jitter=0.3)
    counts = fleet.counts()
    assert sum(counts.values()) == n
    assert abs(counts.get("pi4", 0) - a * n) < 1.0
    assert np.all(fleet.speed > 0)


def test_jitter_zero_means_nominal_speed():
    mix = parse_mix({"pi4": 1.0}, builtin_catalog())
    assert np.all(assign_fleet(mix, 10, np.random.default_rng(0), 0.0).speed == 1.0)


def test_int8_throughput_is_used_or_missing_is_named():
    cat = builtin_catalog()
    assert cat["orin-nano"].flops("int8") > cat["orin-nano"].flops("fp32")
    with pytest.raises(ConfigError, match="device 'pi-zero-2w' has no int8 throughput"):
        cat["pi-zero-2w"].flops("int8")
