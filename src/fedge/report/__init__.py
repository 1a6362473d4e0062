"""Seeing a federation: the HTML report of finished runs, the live dashboard, tracking.

- :func:`write_report` — ``fedge report RUN_DIR [RUN_DIR ...]``: one self-contained HTML
  file and its PNGs (:mod:`fedge.report.html`, :mod:`fedge.report.plots`).
- :class:`Dashboard` — a web page and JSON API over any *status source*; a simulation feeds
  it through :class:`RunStatus` (:mod:`fedge.report.dashboard`).
- :class:`ServeDashboard` — the same page for a deployed gRPC server, over its status
  snapshot (:mod:`fedge.report.deploy_status`).
- :class:`TensorBoardCallback`, :class:`MLflowCallback` — per-round scalars
  (:mod:`fedge.report.tracking`).

Its :data:`HOOKS` give :mod:`fedge.plugins` the ``[dashboard]`` and ``[tracking]`` config
sections and the callbacks they build.
"""

from __future__ import annotations

from fedge.plugins import Hooks
from fedge.report.config import DashboardConfig, TrackingConfig, callbacks_from_config
from fedge.report.dashboard import Dashboard, DashboardCallback, RunStatus, StatusSource
from fedge.report.deploy_status import ServeDashboard, ServerStatusSource, serve_dashboard_hook
from fedge.report.html import write_report
from fedge.report.runs import RunData, load_run
from fedge.report.tracking import MLflowCallback, TensorBoardCallback

HOOKS = Hooks(sections={"dashboard": DashboardConfig, "tracking": TrackingConfig}, callbacks=[callbacks_from_config])

__all__ = [
    "HOOKS",
    "Dashboard",
    "DashboardCallback",
    "DashboardConfig",
    "MLflowCallback",
    "RunData",
    "RunStatus",
    "ServeDashboard",
    "ServerStatusSource",
    "StatusSource",
    "TensorBoardCallback",
    "TrackingConfig",
    "load_run",
    "serve_dashboard_hook",
    "write_report",
]
