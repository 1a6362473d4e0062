from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedge.core.errors import ConfigError
from fedge.report.tracking import MLflowCallback, TensorBoardCallback, scalars
from fedge.simulation.history import History, RoundRecord
from fedge.strategies.base import StrategyState

RECORDS = [
    RoundRecord(
        round=1,
        participants=4,
        train_loss=1.5,
        test_accuracy=0.4,
        uplink_bytes=100,
        extra={"epsilon": 0.5, "skipped": "reason", "flag": True},
    ),
    RoundRecord(
        round=2, participants=3, train_loss=1.1, test_accuracy=math.nan, uplink_bytes=90, extra={"epsilon": 0.7}
    ),
]


def _drive(cb: TensorBoardCallback | MLflowCallback) -> None:
    state = StrategyState(params=[], round_num=0)
    cb.on_run_start(state, rounds=2)
    for rec in RECORDS:
        cb.on_round_end(rec, state)
    cb.on_run_end(History(RECORDS), state)


def test_scalars_keep_only_finite_numbers() -> None:
    s = scalars(RECORDS[1])
    assert s["fedge/train_loss"] == 1.1 and s["extra/epsilon"] == 0.7
    assert "fedge/test_accuracy" not in s and "fedge/round" not in s
    assert "extra/skipped" not in scalars(RECORDS[0]) and "extra/flag" not in scalars(RECORDS[0])


def test_tensorboard_event_files_hold_the_rounds(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _drive(TensorBoardCallback(str(tmp_path / "tb")))
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    loss = acc.Scalars("fedge/train_loss")
    assert [(e.step, round(e.value, 5)) for e in loss] == [(1, 1.5), (2, 1.1)]
    assert [e.step for e in acc.Scalars("fedge/test_accuracy")] == [1]
    assert [round(e.value, 5) for e in acc.Scalars("extra/epsilon")] == [0.5, 0.7]


def test_tensorboard_needs_a_folder() -> None:
    with pytest.raises(ConfigError, match=r"tracking\.tensorboard"):
        TensorBoardCallback("")


def test_mlflow_logs_params_and_metrics_to_a_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    uri = (tmp_path / "mlruns").as_uri()
    cb = MLflowCallback(
        tracking_uri=uri, experiment="fedge-test", params={"training": {"lr": 0.05}, "rounds": 2}, run_name="r1"
    )
    _drive(cb)
    client = MlflowClient(tracking_uri=uri)
    assert cb.run_id is not None
    run = client.get_run(cb.run_id)
    assert run.data.params == {"training.lr": "0.05", "rounds": "2"}
    assert run.info.status == "FINISHED"
    hist = client.get_metric_history(cb.run_id, "fedge/participants")
    assert sorted((m.step, m.value) for m in hist) == [(1, 4.0), (2, 3.0)]


def test_mlflow_store_refusal_is_one_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")
    cb = MLflowCallback(tracking_uri=(tmp_path / "mlruns").as_uri())
    with pytest.raises(ConfigError, match=r"tracking\.mlflow_uri") as info:
        cb.on_run_start(StrategyState(params=[], round_num=0), rounds=1)
    assert "\n" not in str(info.value)
