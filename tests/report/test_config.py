from __future__ import annotations

import tomllib

import pytest

from fedge.config.schema import from_dict, to_toml
from fedge.core.errors import ConfigError
from fedge.plugins import registry
from fedge.report.config import callbacks_from_config
from fedge.report.dashboard import DashboardCallback
from fedge.report.tracking import MLflowCallback, TensorBoardCallback


def test_registered_and_off_by_default() -> None:
    assert callbacks_from_config in registry.hooks("report").callbacks
    assert callbacks_from_config(from_dict({})) == []
    text = to_toml(from_dict({}))
    assert "[dashboard]" in text and "[tracking]" in text


def test_sections_build_their_callbacks() -> None:
    exp = from_dict(
        tomllib.loads("""
[dashboard]
enabled = true
port = 0
token = "abc"
[tracking]
tensorboard = "tb"
mlflow = true
mlflow_experiment = "fleet"
""")
    )
    cbs = callbacks_from_config(exp)
    assert [type(c) for c in cbs] == [DashboardCallback, TensorBoardCallback, MLflowCallback]
    dash, _, ml = cbs
    assert isinstance(dash, DashboardCallback) and dash.token == "abc" and dash.port == 0
    assert isinstance(ml, MLflowCallback) and ml.experiment == "fleet"
    assert "dashboard.token" not in ml.params and ml.params["dashboard.port"] == "0"


def test_bad_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"dashboard\.port"):
        from_dict({"dashboard": {"port": 99999}})
    with pytest.raises(ConfigError, match="linger"):
        from_dict({"dashboard": {"linger": 3}})
