import tomllib

import pytest

from fedge.config.schema import Experiment, from_dict, load, to_toml
from fedge.core.errors import ConfigError, FedgeError
from fedge.devices import DevicePolicy, policy_from_config
from fedge.federation import build
from fedge.plugins import registry


def test_devices_section_round_trips_through_toml():
    text = to_toml(Experiment())
    assert "[devices]" in text
    exp = from_dict(tomllib.loads(text))
    assert exp.section("devices").fleet == {"pi4": 0.5, "orin-nano": 0.3, "phone-mid": 0.2}
    assert registry.hooks("devices").policy is policy_from_config


def test_config_file_builds_the_policy(tmp_path):
    f = tmp_path / "exp.toml"
    f.write_text(
        '[data]\nnum_clients = 6\n[model]\nframework = "numpy"\n'
        "[devices]\nenabled = true\nfleet = { pi5 = 0.5, zonal-ecu = 0.5 }\n"
        'policy = "overcommit"\nselection = "oort"\navailability = "charging"\n'
    )
    exp = load(str(f))
    pol = policy_from_config(exp, build(exp))
    assert isinstance(pol, DevicePolicy)
    assert sorted(p.name for p in pol.fleet.profiles) == ["pi5"] * 3 + ["zonal-ecu"] * 3
    assert pol.oort is not None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("fleet = { pi4 = 0.7, pi5 = 0.7 }", "shares must sum to 1, they sum to 1.4"),
        ('availability = "trace"', "devices.trace: required"),
        ('availability = "trace"\ntrace = "/nonexistent/trace.pkl"', "no such trace file"),
        ('profiles = "/nonexistent/p.toml"', "no such device profile file"),
    ],
)
def test_bad_device_config_is_one_line(tmp_path, section, message):
    f = tmp_path / "exp.toml"
    f.write_text(f'[data]\nnum_clients = 4\n[model]\nframework = "numpy"\n[devices]\nenabled = true\n{section}\n')
    exp = load(str(f))
    with pytest.raises(FedgeError, match=message) as exc:
        policy_from_config(exp, build(exp))
    assert "\n" not in str(exc.value)


def test_unknown_policy_name_is_rejected_by_the_loader(tmp_path):
    f = tmp_path / "exp.toml"
    f.write_text('[devices]\npolicy = "wait_for_all"\n')
    with pytest.raises(ConfigError, match="did you mean 'wait_all'"):
        load(str(f))
