"""The dashboard of a deployed server (`fedge serve --dashboard`).

The gRPC server publishes a read-only :class:`~fedge.deploy.service.ServerStatus`
(nodes with device profile and last heartbeat, the open round's progress, the last
round's metrics). :class:`ServerStatusSource` turns it into the dashboard's snapshot and
keeps the per-round curve itself, polling in a background thread so no round is missed
while nobody has the page open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any

from fedge.config.schema import Experiment
from fedge.report.dashboard import MAX_ROUNDS_SENT, Dashboard

StatusFn = Callable[[], Any]


def _as_dict(status: Any) -> dict[str, Any]:
    if is_dataclass(status) and not isinstance(status, type):
        return asdict(status)
    if isinstance(status, dict):
        return status
    raise TypeError(f"a server status must be a dataclass or dict, got {type(status).__name__}")


def relay_rows(nodes: Any, last: dict[str, Any] | None, now: float) -> list[dict[str, Any]]:
    """The dashboard's relays: each relay node of the server's table (``relay_clients > 0``) with its
    block, and from the last round that had relays (``last``) its children in the sum and its push's bytes."""
    sums = (last or {}).get("relay_sums") or {}
    rows = []
    for n in nodes:
        size = int(n.get("relay_clients") or 0)
        if size <= 0:
            continue
        got = sums.get(n.get("node_id"))
        got = got if isinstance(got, dict) else None
        seen = float(n.get("last_heartbeat") or now)
        rows.append(
            {
                "node": str(n.get("relay_name") or n.get("node_id", ""))[:32],
                "node_id": str(n.get("node_id", ""))[:16],
                "first": n.get("client_id"),
                "clients": size,
                "children": got.get("children") if got else None,
                "wan_up_bytes": got.get("wan_up_bytes") if got else None,
                "round": last.get("round") if last is not None and got else None,
                "state": "online" if n.get("connected") else "offline",
                "last_seen": seen,
            }
        )
    return rows


class ServerStatusSource:
    """A dashboard status source over a server's ``status()`` function."""

    def __init__(self, status: StatusFn, *, name: str = "fedge serve", poll_s: float = 0.5) -> None:
        self._status = status
        self.name = name
        self._lock = threading.Lock()
        self._rounds: dict[int, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(poll_s,), name="fedge-status-poll", daemon=True)
        self._thread.start()

    def _poll(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.snapshot()
            except Exception:  # the server may be shutting down; the page shows the last snapshot
                continue

    def _remember(self, metrics: dict[str, Any]) -> None:
        rnd = metrics.get("round")
        if isinstance(rnd, int) and not isinstance(rnd, bool) and rnd > 0:
            with self._lock:
                self._rounds[rnd] = dict(metrics)

    def snapshot(self) -> dict[str, Any]:
        s = _as_dict(self._status())
        self._remember(s.get("last_metrics") or {})
        now = time.time()
        nodes = []
        for n in s.get("nodes", ()):
            state = "busy" if n.get("busy") else ("online" if n.get("connected") else "offline")
            nodes.append(
                {
                    "id": n.get("client_id"),
                    "node": str(n.get("node_id", ""))[:16],
                    "profile": n.get("profile") or "–",
                    "state": state,
                    "last_heartbeat": n.get("last_heartbeat"),
                    "heartbeat_age_s": now - float(n.get("last_heartbeat") or now),
                }
            )
        waiting = list(s.get("waiting_on", ()))
        received = int(s.get("received", 0))
        phase = str(s.get("phase", ""))
        progress = (
            {"received": received, "expected": received + len(waiting), "waiting_on": waiting}
            if phase == "training"
            else None
        )
        with self._lock:
            history = [self._rounds[k] for k in sorted(self._rounds)][-MAX_ROUNDS_SENT:]
        last = next((h for h in reversed(history) if isinstance(h.get("relay_sums"), dict)), None)
        return {
            "name": f"{self.name} {s.get('run_id', '')}".strip(),
            "mode": "deployment",
            "state": phase,
            "round": int(s.get("round", 0)),
            "rounds": int(s.get("rounds", 0)),
            "round_progress": progress,
            "history": history,
            "nodes": nodes,
            "relays": relay_rows(s.get("nodes", ()), last, now),
            "min_nodes": s.get("min_nodes"),
        }

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class ServeDashboard:
    """A ``transport_hook`` for :func:`fedge.deploy.server.serve` that starts the dashboard.

    Called with the gRPC transport, it serves that transport's service status; the
    dashboard lives until :meth:`close` (or the process ends).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        announce: Callable[[str], None] | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.host, self.port, self.token, self.poll_s = host, port, token, poll_s
        self.announce = announce or (lambda url: None)
        self.source: ServerStatusSource | None = None
        self.dashboard: Dashboard | None = None

    def __call__(self, transport: Any) -> None:
        self.source = ServerStatusSource(transport.service.status, poll_s=self.poll_s)
        self.dashboard = Dashboard(self.source, host=self.host, port=self.port, token=self.token)
        self.announce(self.dashboard.login_url())

    def close(self) -> None:
        if self.dashboard is not None:
            self.dashboard.close()
        if self.source is not None:
            self.source.close()


def serve_dashboard_hook(exp: Experiment, announce: Callable[[str], None] | None = None) -> ServeDashboard | None:
    """The :class:`ServeDashboard` that ``[dashboard]`` asks for; ``None`` when it is off."""
    cfg = exp.section("dashboard")
    if not cfg.enabled:
        return None
    return ServeDashboard(host=cfg.host, port=cfg.port, token=cfg.token or None, announce=announce)
