"""A project from ``fedge new`` run as its README says: simulated, then served to two nodes.

The nodes run from another folder and find the project's model and data code only through
``fedge join --project``, the way a device that keeps the project elsewhere would.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .conftest import FEDGE, free_port

pytestmark = pytest.mark.integration

SHAPES = sorted([(32, 64), (32,), (10, 32), (10,)])
"""The scaffolded make_net on 8x8 digits with hidden = [32]: two linear layers."""


def fedge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDGE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def model_shapes(path: Path) -> list[tuple[int, ...]]:
    with np.load(path) as model:
        return sorted(model[k].shape for k in model.files)


def readme_commands(proj: Path) -> list[str]:
    """The deployment block of the scaffolded README, one command a line."""
    text = (proj / "README.md").read_text()
    block = text.split("## Deployment", 1)[1].split("```", 2)[1]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_new_project_runs_simulated_and_deployed_with_join_project(tmp_path: Path) -> None:
    assert fedge("new", "proj", cwd=tmp_path).returncode == 0
    proj = tmp_path / "proj"
    sim = fedge("run", "experiment.toml", "-q", "--rounds", "2", "-o", "out", cwd=proj)
    assert sim.returncode == 0, sim.stderr
    assert model_shapes(proj / "out" / "model.npz") == SHAPES

    commands = readme_commands(proj)
    keys = [c for c in commands if c.startswith("fedge keys new")]
    joins = [c for c in commands if c.startswith("fedge join")]
    assert "fedge serve experiment.toml" in commands
    assert "cat keys/node1.pub keys/node2.pub > allowed_keys.txt" in commands
    assert len(keys) == 2 and len(joins) == 2 and all("--project" in j for j in joins)
    for command in keys:
        assert fedge(*command.split()[1:], cwd=proj).returncode == 0
    allowed = "".join((proj / "keys" / f"node{i}.pub").read_text() for i in (1, 2))
    (proj / "allowed_keys.txt").write_text(allowed)

    port = free_port()
    elsewhere = tmp_path / "device"
    elsewhere.mkdir()
    serve = [*FEDGE, "serve", "experiment.toml", "-q", "--port", str(port), "--set", "rounds=2", "-o", "served"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with open(tmp_path / "server.log", "wb") as log:
            procs.append(subprocess.Popen(serve, cwd=proj, stdout=log, stderr=subprocess.STDOUT))
        for i, command in enumerate(joins):
            args = command.split()[1:]
            args[args.index("--project") + 1] = str(proj)
            args[args.index("--key") + 1] = str(proj / args[args.index("--key") + 1])
            args = [re.sub(r":8470$", f":{port}", a) for a in args]
            with open(tmp_path / f"node{i}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [*FEDGE, *args, "--give-up", "60"], cwd=elsewhere, stdout=log, stderr=subprocess.STDOUT
                    )
                )
        server, *nodes = procs
        assert server.wait(180) == 0, (tmp_path / "server.log").read_text()[-2000:]
        for i, node in enumerate(nodes):
            assert node.wait(60) == 0, (tmp_path / f"node{i}.log").read_text()[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    assert model_shapes(proj / "served" / "model.npz") == SHAPES
    assert not (elsewhere / "model.py").exists()


def test_a_bad_model_entry_point_is_one_error_line_naming_model_factory(tmp_path: Path) -> None:
    assert fedge("new", "proj", cwd=tmp_path).returncode == 0
    exp = tmp_path / "proj" / "experiment.toml"
    exp.write_text(exp.read_text().replace('factory = "model:make_net"', 'factory = "nope:make"'))
    out = fedge("run", "experiment.toml", "-q", "--rounds", "1", "-o", "out", cwd=exp.parent)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "model.factory" in lines[0], out.stderr
    assert "nope" in lines[0] and "Traceback" not in out.stderr


def test_a_node_elsewhere_without_project_stops_with_one_line_naming_data_loader(tmp_path: Path) -> None:
    assert fedge("new", "proj", cwd=tmp_path).returncode == 0
    proj = tmp_path / "proj"
    assert fedge("keys", "new", "--out", "keys", "--name", "node1", cwd=proj).returncode == 0
    (proj / "allowed_keys.txt").write_text((proj / "keys" / "node1.pub").read_text())
    port = free_port()
    elsewhere = tmp_path / "device"
    elsewhere.mkdir()
    serve = [*FEDGE, "serve", "experiment.toml", "-q", "--port", str(port), "--min-nodes", "1", "--set", "rounds=1"]
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(serve, cwd=proj, stdout=log, stderr=subprocess.STDOUT)
    try:
        key = str(proj / "keys" / "node1.key")
        join = ["join", "--server", f"127.0.0.1:{port}", "--key", key, "--give-up", "60", "--insecure"]
        node = fedge(*join, cwd=elsewhere)
    finally:
        server.kill()
        server.wait()
    assert node.returncode == 2, node.stderr
    last = node.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.loader: cannot import 'data'") and "--project DIR" in last
    assert "Traceback" not in node.stderr
