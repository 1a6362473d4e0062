"""Experiment tracking: per-round scalars to TensorBoard and, optionally, MLflow.

Both are :class:`~fedge.engine.Callback` objects, off by default; the
``[tracking]`` config section (or ``fedge run --tensorboard DIR``) turns them on.
"""

from __future__ import annotations

import math
from typing import Any

from fedge.core.errors import ConfigError
from fedge.engine import Callback
from fedge.simulation.history import COLUMNS, History, RoundRecord
from fedge.strategies.base import StrategyState


def scalars(record: RoundRecord) -> dict[str, float]:
    """The round's finite numeric values: the columns, ``dropped`` count and numeric ``extra``."""
    out: dict[str, float] = {}
    for key in COLUMNS:
        if key == "round":
            continue
        v = getattr(record, key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[f"fedge/{key}"] = float(v)
    for key, v in sorted(record.extra.items()):
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[f"extra/{key}"] = float(v)
    return out


class TensorBoardCallback(Callback):
    """Writes :func:`scalars` of every round to TensorBoard event files in ``logdir``."""

    def __init__(self, logdir: str) -> None:
        if not logdir:
            raise ConfigError("tracking.tensorboard: a log folder is required")
        self.logdir = logdir
        self.writer: Any = None

    def on_run_start(self, state: StrategyState, rounds: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(f"tracking.tensorboard needs fedge[torch,tracking]: {exc}") from None
        self.writer = SummaryWriter(log_dir=self.logdir)

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        if self.writer is None:
            return
        for tag, v in scalars(record).items():
            self.writer.add_scalar(tag, v, global_step=record.round)
        self.writer.flush()

    def on_run_end(self, history: History, state: StrategyState) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:500]
    return out


class MLflowCallback(Callback):
    """Logs the configuration as parameters and :func:`scalars` per round as MLflow metrics.

    ``tracking_uri`` is any MLflow tracking URI (a local ``file:`` folder, a server URL);
    empty means MLflow's own default.
    """

    def __init__(
        self,
        *,
        tracking_uri: str = "",
        experiment: str = "fedge",
        params: dict[str, Any] | None = None,
        run_name: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.params = _flatten(params or {})
        self.run_name = run_name
        self.run_id: str | None = None
        self._client: Any = None

    def on_run_start(self, state: StrategyState, rounds: int) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError(f"tracking.mlflow needs the mlflow (or mlflow-skinny) package: {exc}") from None
        from mlflow.exceptions import MlflowException

        try:
            client = MlflowClient(tracking_uri=self.tracking_uri or None)
            exp = client.get_experiment_by_name(self.experiment)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(self.experiment)
            run = client.create_run(exp_id, run_name=self.run_name)
        except MlflowException as exc:
            first = str(exc.message).strip().split(". ")[0]
            raise ConfigError(f"tracking.mlflow_uri {self.tracking_uri!r}: {first}") from None
        self.run_id = run.info.run_id
        self._client = client
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(self.params.items())]
        for i in range(0, len(items), 100):
            client.log_batch(self.run_id, params=items[i : i + 100])

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        if self._client is None or self.run_id is None:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, record.round) for k, v in scalars(record).items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def on_run_end(self, history: History, state: StrategyState) -> None:
        if self._client is not None and self.run_id is not None:
            self._client.set_terminated(self.run_id)
            self._client = None
