"""A node with only ``fedge[client]`` joins a server that has every extra, and receives no server secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedge.config.schema import from_dict
from fedge.deploy.server import node_config

from .conftest import free_port
from .test_integration import processes, wait_for

pytestmark = pytest.mark.integration

CLIENT_ONLY = """\
import sys
from importlib.abc import MetaPathFinder

# Everything fedge[client] does not install (numpy, click, rich, grpcio, protobuf and cryptography stay).
BLOCKED = {
    "torch", "sklearn", "scipy", "dp_accounting", "matplotlib", "ray", "pandas", "pyarrow", "datasets",
    "transformers", "peft", "bitsandbytes", "onnx", "onnxruntime", "onnxscript", "tensorboard", "mlflow",
    "threadpoolctl",
}


class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Block())
sys.argv = ["fedge", *sys.argv[1:]]
from fedge.cli.main import main

main()
"""

SERVER_ONLY = """
[privacy]
mode = "central"
clip_norm = 1.0
noise_multiplier = 0.5
[dashboard]
token = "s3cret-dashboard-token"
[tracking]
tensorboard = ""
"""


def client_only(tmp_path: Path) -> list[str]:
    (tmp_path / "client_only.py").write_text(CLIENT_ONLY)
    return [sys.executable, str(tmp_path / "client_only.py")]


def test_the_config_a_node_receives_holds_only_what_its_side_runs() -> None:
    exp = from_dict(
        {
            "strategy": {"weighting": "uniform"},
            "privacy": {"mode": "central", "noise_multiplier": 1.0},
            "dashboard": {"token": "s3cret"},
            "deploy": {"tls_key": "/srv/fedge/server.key", "allow_list": "/srv/allow.txt"},
            "compression": {"codec": "int8"},
        }
    )
    text = node_config(exp, 10)
    assert "[compression]" in text and "[model]" in text and "num_classes = 10" in text
    for secret in ("s3cret", "server.key", "[deploy]", "[dashboard]", "[privacy]", "allow.txt"):
        assert secret not in text
    local = from_dict({"privacy": {"mode": "local"}})
    assert "[privacy]" in node_config(local, 10)


def test_a_client_only_node_names_the_extra_a_section_needs(tmp_path: Path) -> None:
    script = client_only(tmp_path)[1]
    code = (
        "import runpy, sys; sys.argv = ['x']; "
        f"exec(open({script!r}).read().split('sys.argv =')[0]); "
        "from fedge.deploy.node import load_experiment; "
        "load_experiment('[privacy]\\nmode = \"local\"\\n')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "pip install 'fedge[privacy]'" in out.stderr and "[privacy]" in out.stderr


def test_a_client_only_node_finishes_a_federation_of_a_fully_installed_server(
    tmp_path: Path, make_keys: Any, write_experiment: Any
) -> None:
    keys, allow = make_keys(2)
    port = free_port()
    exp_path = write_experiment(allow=allow, clients=2, rounds=2, port=port)
    text = exp_path.read_text().replace('name = "fedavg"', 'name = "fedavg"\nweighting = "uniform"')
    exp_path.write_text(text + SERVER_ONLY)
    out = tmp_path / "out"
    with processes() as procs:
        with open(tmp_path / "server.log", "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "fedge.cli.main", "serve", str(exp_path), "-o", str(out)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        procs.append(server)
        wait_for(lambda: "listening" in (tmp_path / "server.log").read_text(), 60, "the server")
        nodes = []
        for i, key in enumerate(keys):
            with open(tmp_path / f"node{i}.log", "wb") as log:
                args = ["join", "--server", f"127.0.0.1:{port}", "--key", str(key), "--partition", str(i)]
                node = subprocess.Popen(
                    [*client_only(tmp_path), *args, "--give-up", "60", "--state-dir", str(tmp_path), "--insecure"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                )
            procs.append(node)
            nodes.append(node)
        assert server.wait(120) == 0, (tmp_path / "server.log").read_text()[-2000:]
        for i, node in enumerate(nodes):
            assert node.wait(30) == 0, (tmp_path / f"node{i}.log").read_text()[-2000:]
    assert (out / "model.npz").is_file()
    assert all("s3cret" not in (tmp_path / f"node{i}.log").read_text() for i in range(2))
