from __future__ import annotations

import contextlib
import io
import json
import math
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedge.core.errors import ConfigError
from fedge.report.dashboard import Dashboard, DashboardCallback, RunStatus
from fedge.simulation.history import History, RoundRecord
from fedge.strategies.base import StrategyState


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            return r.status, json.loads(body) if r.headers["Content-Type"] == "application/json" else body
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _state() -> StrategyState:
    return StrategyState(params=[], round_num=0)


class Broken:
    def snapshot(self) -> dict[str, Any]:
        raise RuntimeError("node table locked")


def test_run_status_follows_the_rounds() -> None:
    status = RunStatus("demo")
    status.on_run_start(_state(), rounds=5)
    status.on_round_end(RoundRecord(round=1, participants=3, test_accuracy=0.5), _state())
    status.on_round_end(RoundRecord(round=2, participants=2), _state())
    snap = status.snapshot()
    assert (snap["round"], snap["rounds"], snap["state"]) == (2, 5, "running")
    assert [r["participants"] for r in snap["history"]] == [3, 2]
    assert snap["history"][1]["test_accuracy"] is None
    status.on_run_end(History(), _state())
    assert status.snapshot()["state"] == "finished"


def test_serves_page_and_status_without_token_on_loopback() -> None:
    status = RunStatus()
    status.on_run_start(_state(), rounds=2)
    status.on_round_end(RoundRecord(round=1, participants=4, train_loss=math.inf, extra={"epsilon": 0.3}), _state())
    with Dashboard(status, port=0) as dash:
        assert dash.token == "" and "token" not in dash.url
        code, page = _get(dash.url)
        assert code == 200 and b"<svg" in page and b"https://" not in page
        code, snap = _get(f"http://127.0.0.1:{dash.port}/api/status")
        assert code == 200 and snap["history"][0]["train_loss"] is None
        assert snap["history"][0]["extra"]["epsilon"] == 0.3
        assert _get(f"http://127.0.0.1:{dash.port}/nope")[0] == 404


def test_token_required_means_401_without_it() -> None:
    with Dashboard(RunStatus(), port=0, token="t0ken-abc") as dash:
        base = f"http://127.0.0.1:{dash.port}"
        for path in ("/", "/api/status"):
            code, body = _get(base + path)
            assert code == 401 and "token" in body["error"]
        assert _get(base + "/api/status?token=wrong")[0] == 401
        assert _get(base + "/api/status?token=t0ken-abc")[0] == 401  # never in a URL
        assert _get(base + "/api/status", {"Authorization": "Bearer t0ken-abc"})[0] == 200
        assert _get(base + "/api/status", {"Authorization": "Bearer nope"})[0] == 401


def test_bound_beyond_loopback_gets_a_random_token() -> None:
    with Dashboard(RunStatus(), host="0.0.0.0", port=0) as dash:
        assert len(dash.token) >= 24 and dash.token not in dash.url and dash.token not in dash.login_url()
        assert _get(f"http://127.0.0.1:{dash.port}/api/status")[0] == 401


def test_a_failing_status_source_does_not_stop_the_server() -> None:
    with Dashboard(Broken(), port=0) as dash:
        code, body = _get(f"http://127.0.0.1:{dash.port}/api/status")
        assert code == 503 and "node table locked" in body["error"]
        assert _get(f"http://127.0.0.1:{dash.port}/healthz")[0] == 200


def test_bad_port_and_busy_port_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"dashboard\.port"):
        Dashboard(RunStatus(), port=70000)
    with Dashboard(RunStatus(), port=0) as dash, pytest.raises(ConfigError, match="cannot listen"):
        Dashboard(RunStatus(), port=dash.port)


def test_callback_serves_during_the_run_and_stops_after() -> None:
    urls: list[str] = []
    cb = DashboardCallback(port=0, announce=urls.append)
    cb.on_run_start(_state(), rounds=1)
    cb.on_round_end(RoundRecord(round=1, participants=1), _state())
    code, snap = _get(urls[0] + "api/status")
    assert code == 200 and snap["round"] == 1
    cb.on_run_end(History(), _state())
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(urls[0] + "healthz", timeout=2)


DASH_TOML = """
seed = 0
rounds = 100000
output = "{out}"
[data]
num_clients = 10
[model]
name = "logreg"
framework = "numpy"
[training]
clients_per_round = 3
local_epochs = 1
[dashboard]
port = 0
token = "browser-test-token"
"""


@contextlib.contextmanager
def _dashboard_run(toml: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A ``fedge run --dashboard`` process on ``toml`` and the address it printed ('' if none); stopped after."""
    cfg = tmp_path / "exp.toml"
    cfg.write_text(toml.format(out=tmp_path / "run"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedge.cli.main", "run", str(cfg), "--dashboard", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = next((ln.split(" ", 1)[1].strip() for ln in proc.stderr if ln.startswith("dashboard: ")), "")
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.integration
def test_dashboard_in_a_real_run_renders_in_headless_chromium(tmp_path: Path, browser: Any) -> None:
    from PIL import Image
    from selenium.webdriver.support.ui import WebDriverWait

    with _dashboard_run(DASH_TOML, tmp_path) as (proc, url):
        assert url.startswith("http://127.0.0.1:") and "/login?code=" in url and "browser-test-token" not in url
        base = url.split("login?")[0]
        assert _get(base + "api/status")[0] == 401
        browser.get(url)
        assert browser.current_url == base  # the one-time link redirected to the page, its cookie set
        cookies = browser.get_cookies()
        assert [(c["value"], c["httpOnly"], c["sameSite"]) for c in cookies] == [("browser-test-token", True, "Strict")]
        WebDriverWait(browser, 60, poll_frequency=0.2).until(
            lambda d: d.execute_script("return /^round [1-9]/.test(document.getElementById('round').textContent)")
        )
        WebDriverWait(browser, 60, poll_frequency=0.2).until(
            lambda d: d.execute_script("return document.querySelectorAll('#acc path').length > 0")
        )
        assert proc.poll() is None, "the run ended before the page was checked"
        note = browser.execute_script("return document.getElementById('persnote').textContent")
        assert note.startswith("no per-client evaluation in this run")
        shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
        colors = shot.getcolors(maxcolors=1 << 20) or []
        assert len(colors) > 20
        assert max(n for n, _ in colors) < 0.97 * shot.width * shot.height


DITTO_TOML = (
    DASH_TOML.replace('name = "logreg"\nframework = "numpy"', 'name = "logreg"\nframework = "torch"')
    + """[strategy]
name = "ditto"
[evaluation]
every = 1
federated_clients = -1
"""
)


@pytest.mark.integration
def test_the_dashboard_draws_personal_and_global_accuracy_per_client(tmp_path: Path, browser: Any) -> None:
    """A Ditto run's personal models and the global model, on the clients' own data: mean and worst 10 %."""
    from selenium.webdriver.support.ui import WebDriverWait

    with _dashboard_run(DITTO_TOML, tmp_path) as (proc, url):
        assert url
        browser.get(url)
        WebDriverWait(browser, 60, poll_frequency=0.2).until(
            lambda d: d.execute_script("return document.querySelectorAll('#pers path').length >= 4")
        )
        labels = browser.execute_script(
            "return Array.from(document.querySelectorAll('#pers text.legend')).map(t => t.textContent)"
        )
        assert labels == ["personal: mean", "personal: worst 10 %", "global: mean", "global: worst 10 %"]
        assert browser.execute_script("return document.getElementById('persnote').textContent") == ""
        assert proc.poll() is None, "the run ended before the page was checked"


SHORT_TOML = """
seed = 0
rounds = 2
[data]
num_clients = 6
[model]
name = "logreg"
framework = "numpy"
[training]
clients_per_round = 2
local_epochs = 1
[dashboard]
port = 0
"""


def _run_cmd(tmp_path: Path, extra: str = "") -> list[str]:
    cfg = tmp_path / "exp.toml"
    cfg.write_text(SHORT_TOML + extra)
    return [sys.executable, "-c", WITH_CTRL_C, "run", str(cfg), "--dashboard", "-q", "-o", str(tmp_path / "run")]


WITH_CTRL_C = (
    "import signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "from fedge.cli.main import main\n"
    "sys.argv = ['fedge', *sys.argv[1:]]\n"
    "main()\n"
)
"""``fedge`` with Ctrl-C delivered even when the suite runs with SIGINT ignored (a background
job of a non-interactive shell), which every child would otherwise inherit."""


def test_linger_default_is_until_ctrl_c_on_a_terminal_and_none_elsewhere() -> None:
    from fedge.report.dashboard import LINGER_UNTIL_CTRL_C, linger_seconds

    assert linger_seconds(LINGER_UNTIL_CTRL_C, tty=True) == math.inf
    assert linger_seconds(LINGER_UNTIL_CTRL_C, tty=False) == 0.0
    assert linger_seconds(2.5, tty=True) == linger_seconds(2.5, tty=False) == 2.5


def test_a_non_interactive_run_with_dashboard_returns_by_itself(tmp_path: Path) -> None:
    out = subprocess.run(_run_cmd(tmp_path), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "dashboard: http://127.0.0.1:" in out.stderr
    assert "still at" not in out.stderr
    assert (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_configured_linger_keeps_the_finished_dashboard_then_returns(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _run_cmd(tmp_path, "linger_s = 30\n"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = next(ln for ln in proc.stderr if ln.startswith("run finished; dashboard still at "))
        url = line.split(" still at ", 1)[1].split(" for ", 1)[0]
        assert "for 30 s" in line
        assert (tmp_path / "run" / "metrics.jsonl").exists(), "the run folder is written before the wait"
        code, snap = _get(url + "api/status")
        assert code == 200 and snap["state"] == "finished" and snap["round"] == 2
        proc.send_signal(__import__("signal").SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill() if proc.poll() is None else None
        if proc.stderr is not None:
            proc.stderr.close()


def test_on_a_terminal_the_finished_dashboard_waits_for_ctrl_c(tmp_path: Path) -> None:
    import os
    import pty
    import signal

    leader, follower = pty.openpty()
    proc = subprocess.Popen(_run_cmd(tmp_path), stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    try:
        seen = b""
        while b"Ctrl-C to exit" not in seen:
            chunk = os.read(leader, 4096)
            assert chunk, "the run ended without offering its dashboard"
            seen += chunk
        text = seen.decode(errors="replace").replace("\r", "")
        url = text.split("run finished; dashboard still at ", 1)[1].split(" ", 1)[0]
        assert _get(url + "healthz")[0] == 200
        assert (tmp_path / "run" / "summary.json").exists()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url + "healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


HIER_TOML = (
    DASH_TOML.replace("num_clients = 10", "num_clients = 60")
    .replace("clients_per_round = 3", "clients_per_round = 20")
    .replace('token = "browser-test-token"\n', "")
    + """[hierarchy]
enabled = true
zones_per_vehicle = 4
kappa1 = 2
"""
)


@pytest.mark.integration
def test_the_dashboard_lists_a_simulated_hierarchys_relays(tmp_path: Path, browser: Any) -> None:
    """15 vehicles of 4 zonal ECUs: one row per relay with its block; after a round, the children in
    each reporting relay's sum and its WAN bytes (a relay none of whose children were sampled shows –)."""
    from selenium.webdriver.support.ui import WebDriverWait

    with _dashboard_run(HIER_TOML, tmp_path) as (proc, url):
        assert url
        browser.get(url)
        WebDriverWait(browser, 60, poll_frequency=0.2).until(
            lambda d: d.execute_script(
                "return Array.from(document.querySelectorAll('#relays tr.relay td:nth-child(3)'))"
                ".some(td => td.textContent !== '–')"
            )
        )
        cells = browser.execute_script(
            "return Array.from(document.querySelectorAll('#relays tr.relay'))"
            ".map(tr => Array.from(tr.cells).map(td => td.textContent))"
        )
        assert [c[:2] for c in cells] == [[f"relay {v}", f"{4 * v}–{4 * v + 3}"] for v in range(15)]
        for _, _, children, wan, state, _seen in cells:
            assert state == "simulated"
            if children == "–":  # none of its children sampled in the last round
                assert wan == "–"
            else:
                assert re.fullmatch(r"[1-4] of 4", children) and wan.endswith("kB")
        assert browser.execute_script("return document.getElementById('nodes').textContent").startswith(
            "no connected nodes"
        )
        assert proc.poll() is None, "the run ended before the page was checked"
