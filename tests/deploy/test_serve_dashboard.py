"""`fedge serve --dashboard`: the live dashboard of a real gRPC server, fed by real nodes."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import FEDGE, free_port

pytestmark = pytest.mark.integration


def test_serve_dashboard_shows_nodes_and_rounds(tmp_path: Path, make_keys, write_experiment) -> None:
    keys, allow = make_keys(2)
    port, board = free_port(), free_port()
    exp = write_experiment(allow=allow, clients=2, rounds=40, port=port)
    exp.write_text(exp.read_text() + f"\n[dashboard]\nport = {board}\n")
    server = subprocess.Popen([*FEDGE, "serve", str(exp), "--dashboard", "-q"], cwd=tmp_path)
    nodes = [
        subprocess.Popen(
            [
                *FEDGE,
                "join",
                "--server",
                f"127.0.0.1:{port}",
                "--key",
                str(k),
                "--partition",
                str(i),
                "--state-dir",
                str(tmp_path),
                "-q",
                "--insecure",
            ],
            cwd=tmp_path,
        )
        for i, k in enumerate(keys)
    ]
    try:
        seen: dict = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{board}/api/status", timeout=2) as r:
                    seen = json.loads(r.read())
            except OSError:
                seen = {}
            if seen.get("history") and len(seen.get("nodes", [])) == 2:
                break
            time.sleep(0.3)
        assert seen.get("mode") == "deployment"
        assert len(seen["nodes"]) == 2
        assert seen["history"] and seen["history"][0]["participants"] == 2
        assert seen["rounds"] == 40
        assert server.wait(timeout=120) == 0
    finally:
        for p in [server, *nodes]:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
