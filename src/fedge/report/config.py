"""The ``[dashboard]`` and ``[tracking]`` config sections and the callbacks they build."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from fedge.config.schema import Experiment, opt, to_dict
from fedge.engine import Callback

if TYPE_CHECKING:
    from fedge.federation import Federation
    from fedge.report.dashboard import RelayRows


@dataclass
class DashboardConfig:
    enabled: bool = opt(False, "serve the live dashboard while the run goes (`fedge run --dashboard`)")
    host: str = opt("127.0.0.1", "address to listen on; anything but loopback requires a token")
    port: int = opt(8765, "port to listen on (0 = any free port)", min=0, max=65535)
    token: str = opt("", "token the page and API require ('' = none on loopback, a random one elsewhere)")
    linger_s: float = opt(
        -1.0,
        "after the run, keep serving this many seconds (-1 = until Ctrl-C from a terminal, none otherwise)",
        min=-1,
    )


@dataclass
class TrackingConfig:
    tensorboard: str = opt("", "write per-round TensorBoard scalars to this folder ('' = off)")
    mlflow: bool = opt(False, "log the config and per-round metrics to MLflow")
    mlflow_uri: str = opt("", "MLflow tracking URI ('' = MLflow's default, e.g. ./mlruns)")
    mlflow_experiment: str = opt("fedge", "MLflow experiment name")


def public_uri(uri: str) -> str:
    """A tracking URI without its credentials (``user:password@``, query, fragment): what may be stored or logged.

    MLflow takes credentials from its environment instead (``MLFLOW_TRACKING_USERNAME``,
    ``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``).
    """
    parts = urlsplit(uri)
    if not (parts.netloc or parts.query or parts.fragment):
        return uri
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def without_secrets(exp: Experiment) -> Experiment:
    """The experiment without the dashboard token and tracking credentials: what a state database or MLflow keeps."""
    ext = dict(exp.extensions)
    if "dashboard" in ext:
        ext["dashboard"] = dataclasses.replace(ext["dashboard"], token="")
    if "tracking" in ext:
        ext["tracking"] = dataclasses.replace(ext["tracking"], mlflow_uri=public_uri(ext["tracking"].mlflow_uri))
    return dataclasses.replace(exp, extensions=ext)


def _announce(url: str) -> None:
    print(f"dashboard: {url}", file=sys.stderr, flush=True)


def _relays(built: Federation | None) -> RelayRows | None:
    """The "Relays" panel of a simulated ``[hierarchy]`` run: its relays backend's topology and trace."""
    from fedge.hierarchy import HierarchyBackend
    from fedge.report.dashboard import TopologyRelays

    transport = getattr(built, "transport", None)
    backend = getattr(transport, "backend", None)
    return TopologyRelays(backend) if isinstance(backend, HierarchyBackend) else None


def callbacks_from_config(exp: Experiment, built: Federation | None = None) -> Sequence[Callback]:
    """Builds the dashboard and tracking callbacks the experiment asks for (none by default)."""
    from fedge.report.dashboard import DashboardCallback
    from fedge.report.tracking import MLflowCallback, TensorBoardCallback

    out: list[Callback] = []
    d: DashboardConfig = exp.section("dashboard")
    if d.enabled and not (built is not None and built.deployed):  # `fedge serve` starts its own over the server
        out.append(
            DashboardCallback(
                host=d.host,
                port=d.port,
                token=d.token or None,
                linger_s=d.linger_s,
                announce=_announce,
                relays=_relays(built),
            )
        )
    t: TrackingConfig = exp.section("tracking")
    if t.tensorboard:
        out.append(TensorBoardCallback(t.tensorboard))
    if t.mlflow:
        params = to_dict(without_secrets(exp))
        params.get("dashboard", {}).pop("token", None)
        out.append(
            MLflowCallback(
                tracking_uri=t.mlflow_uri, experiment=t.mlflow_experiment, params=params, run_name=exp.output_dir()
            )
        )
    return out
