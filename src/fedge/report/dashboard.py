"""The live dashboard: a small HTTP server in a background thread of the running process.

It serves one page (inline JavaScript and SVG, no CDN) and JSON endpoints that read a
*status source*: any object whose ``snapshot()`` returns a JSON-able dict. A simulation
feeds a :class:`RunStatus` (a :class:`~fedge.engine.Callback`); a deployed server
passes its own status snapshot. Bound to 127.0.0.1 by default; bound elsewhere it requires
a token and answers 401 without it.

The token is never printed and never travels in a URL (where logs, browser history and
``Referer`` headers would keep it). A script sends it as ``Authorization: Bearer``; a
person opens the announced *login URL* ``/login?code=...``, whose code works once: it
sets the token as an ``HttpOnly``, ``SameSite=Strict`` cookie and redirects to ``/``.
:meth:`Dashboard.login_url` makes a fresh code for each further browser.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

from fedge.core.errors import ConfigError
from fedge.engine import Callback
from fedge.simulation.history import History, RoundRecord
from fedge.strategies.base import StrategyState

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_ROUNDS_SENT = 5000
MAX_RELAYS_SENT = 200
"""Relays a simulated hierarchy's snapshot lists; the page says how many more there are."""
MAX_LOGIN_CODES = 16
"""Unused one-time login codes kept at once; making another drops the oldest."""


class StatusSource(Protocol):
    def snapshot(self) -> dict[str, Any]:
        """A JSON-able dict: ``round``, ``rounds``, ``state``, ``history`` (list of rounds), ``nodes``."""


def _clean(value: Any) -> Any:
    """NaN/Inf become ``null`` so the JSON stays standard."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class RelayRows(Protocol):
    """The dashboard's "Relays" panel: its rows, read after each round, and how many relays there are
    in all (the rows may list fewer). :class:`TopologyRelays` is a simulated hierarchy's."""

    def __call__(self) -> list[dict[str, Any]]: ...

    def total(self) -> int: ...


class TopologyRelays:
    """The relays of a simulated ``[hierarchy]`` run, from its :class:`~fedge.hierarchy.HierarchyBackend`:
    each relay's block from the topology and, from the backend's trace of the round just run, the
    children in its sum and the bytes it sent the cloud. At most ``limit`` relays are listed."""

    def __init__(self, backend: Any, limit: int = MAX_RELAYS_SENT) -> None:
        self.backend, self.limit = backend, limit
        self._seen: dict[int, float] = {}

    def total(self) -> int:
        return int(self.backend.topology.num_relays)

    def __call__(self) -> list[dict[str, Any]]:
        topo, now = self.backend.topology, time.time()
        traced = {t.relay: t for t in self.backend.trace}
        self._seen.update((v, now) for v in traced)
        rows = []
        for v in range(min(topo.num_relays, self.limit)):
            t = traced.get(v)
            rows.append(
                {
                    "node": f"relay {v}",
                    "first": v * topo.fanout,
                    "clients": topo.fanout,
                    "children": (len(t.steps[-1]) if t.steps else 0) if t is not None else None,
                    "wan_up_bytes": t.up_bytes if t is not None else None,
                    "state": "simulated",
                    "last_seen": self._seen.get(v),
                }
            )
        return rows


class RunStatus(Callback):
    """A simulation's status for the dashboard, fed by the round loop's callbacks.

    ``relays`` (a simulated hierarchy's :class:`TopologyRelays`) fills the "Relays" panel after each round.
    """

    def __init__(self, name: str = "simulation", relays: RelayRows | None = None) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._rounds_total = 0
        self._records: list[dict[str, Any]] = []
        self._state = "starting"
        self._started = time.time()
        self._relay_rows = relays
        self._relays: list[dict[str, Any]] = []
        self._relays_total = 0

    def on_run_start(self, state: StrategyState, rounds: int) -> None:
        relays = self._relay_rows() if self._relay_rows is not None else []
        with self._lock:
            self._rounds_total = rounds
            self._state = "running"
            self._started = time.time()
            self._relays = relays
            self._relays_total = self._relay_rows.total() if self._relay_rows is not None else 0

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        relays = self._relay_rows() if self._relay_rows is not None else []
        with self._lock:
            self._records.append(record.to_json())
            self._relays = relays

    def on_run_end(self, history: History, state: StrategyState) -> None:
        with self._lock:
            self._state = "finished"

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            history = list(self._records[-MAX_ROUNDS_SENT:])
            current = history[-1]["round"] if history else 0
            return {
                "name": self.name,
                "mode": "simulation",
                "state": self._state,
                "round": current,
                "rounds": self._rounds_total,
                "round_progress": None,
                "elapsed_s": time.time() - self._started,
                "history": history,
                "nodes": [],
                "relays": list(self._relays),
                "relays_total": self._relays_total,
            }


class _Handler(BaseHTTPRequestHandler):
    server: DashboardHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _authorised(self) -> bool:
        token = self.server.token
        if not token:
            return True
        auth = self.headers.get("Authorization", "")
        given = auth[len("Bearer ") :] if auth.startswith("Bearer ") else self._cookie()
        return hmac.compare_digest(given.encode(), token.encode())

    def _cookie(self) -> str:
        try:
            jar = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return ""
        morsel = jar.get(self.server.cookie_name)
        return morsel.value if morsel is not None else ""

    def _login(self, query: dict[str, list[str]]) -> None:
        """Trade a one-time code for the token cookie, then show the page."""
        if not self.server.redeem((query.get("code") or [""])[0]):
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "this login link is used or unknown; ask for a new one"})
            return
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header(
            "Set-Cookie", f"{self.server.cookie_name}={self.server.token}; HttpOnly; SameSite=Strict; Path=/"
        )
        self.send_header("Location", "/")
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()

    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, obj: Any) -> None:
        self._send(status, json.dumps(_clean(obj), allow_nan=False).encode(), "application/json")

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/login" and self.server.token:
            self._login(parse_qs(url.query))
            return
        if not self._authorised():
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "a valid token is required"})
            return
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif url.path == "/api/status":
            try:
                snap = self.server.source.snapshot()
            except Exception as exc:  # the dashboard keeps serving whatever the source does
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"status unavailable: {exc}"})
                return
            self._json(HTTPStatus.OK, snap)
        elif url.path == "/healthz":
            self._json(HTTPStatus.OK, {"ok": True})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})


class DashboardHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], source: StatusSource, token: str, page: bytes) -> None:
        super().__init__(addr, _Handler)
        self.source = source
        self.token = token
        self.page = page
        self.cookie_name = f"fedge_dashboard_{self.server_address[1]}"
        self._codes: list[str] = []
        self._codes_lock = threading.Lock()

    def new_code(self) -> str:
        """A fresh one-time login code (the oldest unused one goes past :data:`MAX_LOGIN_CODES`)."""
        code = secrets.token_urlsafe(24)
        with self._codes_lock:
            self._codes = [*self._codes, code][-MAX_LOGIN_CODES:]
        return code

    def redeem(self, code: str) -> bool:
        """Whether ``code`` is an unused login code; it is used up either way."""
        with self._codes_lock:
            match = next((c for c in self._codes if hmac.compare_digest(c.encode(), code.encode())), None)
            if match is not None:
                self._codes.remove(match)
        return match is not None


def page_html() -> bytes:
    return resources.files("fedge.report").joinpath("dashboard.html").read_bytes()


class Dashboard:
    """Serves ``source`` on ``host:port`` (0 = a free port) until :meth:`close`.

    ``token``: ``None`` means none on loopback and a fresh random one elsewhere; a string
    always requires it.
    """

    def __init__(
        self, source: StatusSource, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"dashboard.port: must be in 0..65535, got {port}")
        if token is None:
            token = "" if host in LOOPBACK else secrets.token_urlsafe(24)
        try:
            self._server = DashboardHTTPServer((host, port), source, token, page_html())
        except OSError as exc:
            raise ConfigError(f"dashboard: cannot listen on {host}:{port}: {exc.strerror}") from None
        self.host = host
        self.token = token
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fedge-dashboard", kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The page's address; it holds no secret (with a token, open :meth:`login_url` instead)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def login_url(self) -> str:
        """The address to announce: with a token, a fresh one-time login link; without, the page."""
        if not self.token:
            return self.url
        return f"{self.url}login?{urlencode({'code': self._server.new_code()})}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


LINGER_UNTIL_CTRL_C = -1.0
"""``linger_s`` value meaning: until Ctrl-C when run from a terminal, not at all otherwise."""

_finished: list[tuple[Dashboard, float]] = []
_finished_lock = threading.Lock()


def interactive() -> bool:
    """Whether a person is at the keyboard: stdin and stdout are both terminals."""
    return sys.stdin is not None and sys.stdout is not None and sys.stdin.isatty() and sys.stdout.isatty()


def linger_seconds(linger_s: float, *, tty: bool) -> float:
    """How long a finished run's dashboard keeps serving: ``math.inf`` = until Ctrl-C.

    ``linger_s >= 0`` is taken as given; :data:`LINGER_UNTIL_CTRL_C` (the default) means
    until Ctrl-C on a terminal and 0 elsewhere, so CI and scripts are never held up.
    """
    if linger_s >= 0:
        return linger_s
    return math.inf if tty else 0.0


def linger_finished(announce: Callable[[str], None] | None = None) -> None:
    """Keeps the finished runs' dashboards serving as their ``linger_s`` asks, then closes them.

    ``fedge run`` calls this after the run folder is written, so waiting here risks no
    result; Ctrl-C ends the wait (and only the wait). ``announce`` gets one line per dashboard.
    """
    say = announce or (lambda line: print(line, file=sys.stderr, flush=True))
    with _finished_lock:
        pending = list(_finished)
        _finished.clear()
    try:
        for dashboard, seconds in pending:
            if math.isinf(seconds):
                url = dashboard.login_url()
                say(f"run finished; dashboard still at {url} — Ctrl-C to exit")
                threading.Event().wait()
            else:
                url = dashboard.login_url()
                say(f"run finished; dashboard still at {url} for {seconds:g} s — Ctrl-C to exit sooner")
                time.sleep(seconds)
    except KeyboardInterrupt:
        pass
    finally:
        for dashboard, _ in pending:
            dashboard.close()


class DashboardCallback(Callback):
    """Starts a :class:`Dashboard` over a :class:`RunStatus` when the run starts.

    When the run ends the dashboard keeps serving, so its final curves can be seen: for
    ``linger_s`` seconds, or by default until Ctrl-C when run from a terminal (see
    :func:`linger_seconds`). The round loop is never held up: a dashboard that should
    linger is handed to :func:`linger_finished`, which ``fedge run`` calls once the run
    folder is written; without that call it serves until the process ends.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        linger_s: float = LINGER_UNTIL_CTRL_C,
        announce: Any = None,
        relays: RelayRows | None = None,
    ) -> None:
        self.status = RunStatus(relays=relays)
        self.host, self.port, self.token = host, port, token
        self.linger_s = linger_s
        self.announce = announce or (lambda url: None)
        self.dashboard: Dashboard | None = None

    def on_run_start(self, state: StrategyState, rounds: int) -> None:
        self.status.on_run_start(state, rounds)
        self.dashboard = Dashboard(self.status, host=self.host, port=self.port, token=self.token)
        self.announce(self.dashboard.login_url())

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        self.status.on_round_end(record, state)

    def on_run_end(self, history: History, state: StrategyState) -> None:
        self.status.on_run_end(history, state)
        if self.dashboard is None:
            return
        seconds = linger_seconds(self.linger_s, tty=interactive())
        if seconds > 0:
            with _finished_lock:
                _finished.append((self.dashboard, seconds))
        else:
            self.dashboard.close()
        self.dashboard = None
