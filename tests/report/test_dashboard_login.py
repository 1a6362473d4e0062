"""The dashboard's token never travels in a URL: a one-time login link sets it as a cookie.

A real dashboard HTTP server on loopback, spoken to with ``http.client`` (which follows no
redirect, so each answer is seen as sent), and a real ``fedge run --dashboard`` whose
printed output must not hold the token.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from fedge.report.dashboard import Dashboard, RunStatus

TOKEN = "login-test-T0KEN"


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    con.request("GET", path, headers=headers or {})
    res = con.getresponse()
    res.read()
    con.close()
    return res


def test_a_login_code_works_once_and_sets_a_strict_http_only_cookie() -> None:
    with Dashboard(RunStatus(), port=0, token=TOKEN) as dash:
        link = urlsplit(dash.login_url())
        assert TOKEN not in dash.login_url() and TOKEN not in dash.url
        assert link.path == "/login" and link.query.startswith("code=")
        first = _get(dash.port, f"/login?{link.query}")
        assert first.status == 303 and first.getheader("Location") == "/"
        cookie = first.getheader("Set-Cookie") or ""
        parts = [p.strip() for p in cookie.split(";")]
        assert parts[0] == f"fedge_dashboard_{dash.port}={TOKEN}"
        assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(parts[1:])
        again = _get(dash.port, f"/login?{link.query}")
        assert again.status == 401 and again.getheader("Set-Cookie") is None
        assert _get(dash.port, "/login?code=guessed").status == 401
        with_cookie = _get(dash.port, "/api/status", {"Cookie": parts[0]})
        assert with_cookie.status == 200
        assert _get(dash.port, "/", {"Cookie": parts[0]}).status == 200
        assert _get(dash.port, "/api/status", {"Cookie": f"fedge_dashboard_{dash.port}=wrong"}).status == 401


def test_the_token_is_taken_from_a_bearer_header_or_the_cookie_never_the_query() -> None:
    with Dashboard(RunStatus(), port=0, token=TOKEN) as dash:
        assert _get(dash.port, "/api/status", {"Authorization": f"Bearer {TOKEN}"}).status == 200
        assert _get(dash.port, f"/api/status?token={TOKEN}").status == 401
        assert _get(dash.port, f"/?token={TOKEN}").status == 401
        assert _get(dash.port, "/api/status").status == 401
        codes = {urlsplit(dash.login_url()).query for _ in range(3)}
        assert len(codes) == 3  # each browser gets its own link


SHORT_TOML = """
seed = 0
rounds = 2
[data]
num_clients = 4
[model]
name = "logreg"
framework = "numpy"
[training]
clients_per_round = 2
local_epochs = 1
[dashboard]
port = 0
token = "{token}"
"""


def test_fedge_run_prints_a_login_link_and_never_the_token(tmp_path: Path) -> None:
    cfg = tmp_path / "exp.toml"
    cfg.write_text(SHORT_TOML.format(token=TOKEN))
    res = subprocess.run(
        [sys.executable, "-m", "fedge.cli.main", "run", str(cfg), "--dashboard", "-o", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    printed = res.stdout + res.stderr
    assert "dashboard: http://127.0.0.1:" in printed and "/login?code=" in printed
    assert TOKEN not in printed
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert TOKEN not in json.dumps(summary)
