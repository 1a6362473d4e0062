"""``fedge serve`` safe by default: stored security on resume, warnings, status hints, SIGTERM, run folder.

Real server and node processes on 127.0.0.1; a few rounds of a NumPy model.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .conftest import FEDGE, free_port

pytestmark = pytest.mark.integration

EXIT_SIGTERM = 143


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def spawn(procs: list[subprocess.Popen[bytes]], args: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        p = subprocess.Popen([*FEDGE, *args], stdout=f, stderr=subprocess.STDOUT, cwd=log.parent, **kw)
    procs.append(p)
    return p


def wait_for_text(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        content = log.read_text()
        if text in content:
            return content
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {text!r}:\n{content[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {text!r}:\n{log.read_text()[-2000:]}")


def fedge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDGE, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def test_resume_keeps_the_stored_tls_and_allow_list_and_refuses_to_lose_them(
    tmp_path: Path, make_keys: Any, write_experiment: Any, certs: dict[str, Path]
) -> None:
    _, allow = make_keys(1)
    port = free_port()
    exp = write_experiment(allow=None, clients=1, rounds=2, port=port)
    target = f"127.0.0.1:{port}"
    tls = ["--tls-cert", str(certs["server"]), "--tls-key", str(certs["server_key"])]
    state = str(tmp_path / "state.db")
    with processes() as procs:
        log = tmp_path / "first.log"
        first = spawn(procs, ["serve", str(exp), "--allow", str(allow), *tls], log)
        wait_for_text(log, "listening on", first)
        assert stop(first) == EXIT_SIGTERM
        assert "stopped by SIGTERM" in log.read_text()

        log = tmp_path / "resumed.log"
        resumed = spawn(procs, ["serve", "--state", state, "--resume", "--port", str(port)], log)
        text = wait_for_text(log, "listening on", resumed)
        assert "WARNING" not in text, text
        plain = fedge("status", "--server", target, cwd=tmp_path)
        assert plain.returncode == 2
        assert plain.stderr.strip() == f"error: status of {target}: the server uses TLS: pass --ca FILE"
        shown = fedge("status", "--server", target, "--ca", str(certs["ca"]), cwd=tmp_path)
        assert shown.returncode == 0 and "waiting for nodes" in shown.stdout, shown.stderr
        assert stop(resumed) == EXIT_SIGTERM

    moved = allow.rename(tmp_path / "elsewhere.txt")
    gone = fedge("serve", "--state", state, "--resume", "--port", str(port), "-q", cwd=tmp_path)
    assert gone.returncode == 2
    assert gone.stderr.strip().splitlines() == [
        f"error: deploy.allow_list: {allow.resolve()}, stored with this run, is gone; "
        "pass --allow FILE (or --downgrade-security to resume without it)"
    ]

    with processes() as procs:
        log = tmp_path / "downgraded.log"
        args = ["serve", "--state", state, "--resume", "--port", str(port), "--downgrade-security", "--insecure"]
        down = spawn(procs, args, log)
        text = wait_for_text(log, "listening on", down)
        assert "WARNING: DOWNGRADE: resuming without TLS, the allow-list" in text
        assert "WARNING: no allow-list: every node will be refused; pass --allow FILE" in text
        assert "WARNING: no TLS (--insecure): models and updates travel in plaintext" in text
        wrong = fedge("status", "--server", target, "--ca", str(certs["ca"]), cwd=tmp_path)
        assert wrong.returncode == 2
        assert wrong.stderr.strip() == f"error: status of {target}: the server does not use TLS: drop --ca"
        assert stop(down) == EXIT_SIGTERM
    assert moved.is_file()


def test_status_of_nothing_listening_names_the_address_in_one_line(tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    res = fedge("status", "--server", target, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: status of {target}: nothing is listening at {target} (is `fedge serve` running there?)"
    ]


SLOW_LOADER = """
import pathlib, time

def load_client(client_id, num_clients, seed):
    pathlib.Path({marker!r}).touch()
    time.sleep(120)
"""


def test_sigterm_while_loading_data_stops_at_once_with_the_documented_code(
    tmp_path: Path, make_keys: Any, write_experiment: Any
) -> None:
    _, allow = make_keys(1)
    marker = tmp_path / "loading"
    (tmp_path / "slowdata.py").write_text(SLOW_LOADER.format(marker=str(marker)))
    exp = write_experiment(allow=allow, clients=1, rounds=1, port=free_port())
    exp.write_text(exp.read_text().replace("[data]\n", '[data]\nloader = "slowdata:load_client"\n'))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    with processes() as procs:
        log = tmp_path / "server.log"
        server = spawn(procs, ["serve", str(exp), "-q"], log, env=env)
        end = time.monotonic() + 90
        while not marker.exists() and server.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert marker.exists(), log.read_text()
        assert stop(server) == EXIT_SIGTERM
    lines = log.read_text().strip().splitlines()
    assert lines[-1] == (
        "fedge serve: stopped by SIGTERM (during start-up); `fedge serve --resume` continues the run"
    ), lines


def test_served_run_writes_the_run_folder_that_report_and_export_read(
    tmp_path: Path, make_keys: Any, write_experiment: Any
) -> None:
    keys, allow = make_keys(1)
    port = free_port()
    exp = write_experiment(allow=allow, clients=1, rounds=2, port=port, model="mlp")
    exp.write_text('output = "runs/served"\n' + exp.read_text())
    with processes() as procs:
        server = spawn(procs, ["serve", str(exp)], tmp_path / "server.log")
        wait_for_text(tmp_path / "server.log", "listening on", server)
        node = spawn(
            procs,
            ["join", "--server", f"127.0.0.1:{port}", "--key", str(keys[0]), "--partition", "0", "-q", "--insecure"],
            tmp_path / "node.log",
        )
        assert server.wait(120) == 0, (tmp_path / "server.log").read_text()[-2000:]
        assert node.wait(30) == 0
    run = tmp_path / "runs" / "served"
    for name in ("config.toml", "metrics.jsonl", "metrics.csv", "model.npz", "partition.json", "summary.json"):
        assert (run / name).is_file(), name
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    report = fedge("report", str(run), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    exported = fedge("export", str(run), "--quantize", "none", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert (run / "export" / "model.onnx").is_file()


def test_sigterm_mid_run_checkpoints_the_round_and_writes_no_run_folder(
    tmp_path: Path, make_keys: Any, write_experiment: Any
) -> None:
    keys, allow = make_keys(1)
    port = free_port()
    exp = write_experiment(allow=allow, clients=1, rounds=200, port=port)
    with processes() as procs:
        log = tmp_path / "server.log"
        server = spawn(procs, ["serve", str(exp), "-o", str(tmp_path / "out")], log)
        wait_for_text(log, "listening on", server)
        join = ["join", "--server", f"127.0.0.1:{port}", "--key", str(keys[0]), "--partition", "0", "--give-up", "5"]
        join.append("--insecure")
        spawn(procs, join, tmp_path / "node.log")
        wait_for_text(log, "event=round_done round=1 ", server)
        assert stop(server) == EXIT_SIGTERM
    text = log.read_text()
    assert "SIGTERM, finishing the current round" in text
    done = int(text.split("stopped by SIGTERM (after round ")[1].split(",")[0])
    assert 1 <= done < 200
    assert last_checkpoint(tmp_path / "state.db") == done
    assert not (tmp_path / "out").exists()


def last_checkpoint(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return int(con.execute("SELECT round FROM checkpoint").fetchone()[0])
