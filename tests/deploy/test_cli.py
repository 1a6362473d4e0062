"""The deployment commands: keys, clear one-line errors, and a NumPy-only node path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from fedge.cli.main import cli

from .conftest import free_port


def test_keys_new_writes_a_pair_and_prints_the_node_id(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["keys", "new", "--out", str(tmp_path), "--name", "pi7"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pi7.key").is_file() and (tmp_path / "pi7.pub").read_text().startswith("ed25519 ")
    assert "node id" in res.output
    again = CliRunner().invoke(cli, ["keys", "new", "--out", str(tmp_path), "--name", "pi7"])
    assert again.exit_code == 2 and "exists" in again.output


def test_resume_without_a_run_is_a_one_line_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["serve", "--state", str(tmp_path / "none.db"), "--resume", "-q"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [f"error: {tmp_path / 'none.db'}: no run to resume"]


def test_serve_gives_back_the_callers_sigterm_handler(tmp_path: Path) -> None:
    """A caller that runs `fedge serve` in its own process (a test, a notebook) keeps its SIGTERM handler,
    and the worker processes it forks later are not handed serve's."""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    res = CliRunner().invoke(cli, ["serve", "--state", str(tmp_path / "none.db"), "--resume", "-q"])
    assert res.exit_code == 2
    assert signal.getsignal(signal.SIGTERM) is before


def test_join_refuses_contradictory_options(tmp_path: Path) -> None:
    runner = CliRunner()
    key = tmp_path / "n.key"
    runner.invoke(cli, ["keys", "new", "--out", str(tmp_path), "--name", "n"])
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((4, 2)), label=np.zeros(4))
    args = ["join", "--server", "127.0.0.1:1", "--key", str(key), "--data", str(data), "--partition", "1"]
    res = runner.invoke(cli, [*args, "--insecure"])
    assert res.exit_code == 2 and "exclude each other" in res.output
    res = runner.invoke(cli, ["join", "--server", "127.0.0.1:1", "--key", str(data), "--insecure"])
    assert res.exit_code == 2 and "not a readable private key" in res.output


def test_status_of_a_server_that_is_not_there_is_a_one_line_error() -> None:
    res = CliRunner().invoke(cli, ["status", "--server", f"127.0.0.1:{free_port()}"])
    assert res.exit_code == 2 and res.output.startswith("error: status of 127.0.0.1:")


NODE_PATH = """
import sys
import numpy as np
from fedge.deploy.node import load_experiment, file_client, Node
from fedge.federation import make_strategy
from fedge.clients.base import run_fit
from fedge.core.types import ClientContext, FitInstructions, TrainConfig, client_rng
from fedge.pipeline import Pipeline
exp = load_experiment('seed = 1\\n[model]\\nname = "mlp"\\nframework = "numpy"\\nhidden = [8]\\n[deploy]\\nport = 1\\n')
client = file_client(sys.argv[1], num_classes=3)(exp, 0)
params = client.learner.init_params(1)
ins = FitInstructions(1, TrainConfig(epochs=1, batch_size=4))
up = run_fit(client, params, ins, ClientContext(0, 1, client_rng(1, 1, 0)),
             strategy=make_strategy(exp), pipeline=Pipeline())
assert up.num_examples > 0 and len(up.delta) == len(params)
heavy = sorted(m for m in ("torch", "pandas", "sklearn", "scipy") if m in sys.modules)
print("heavy:", heavy)
"""


def test_a_numpy_node_trains_without_torch_pandas_or_sklearn(tmp_path: Path) -> None:
    data = tmp_path / "device.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(40, 5)).astype(np.float32), label=rng.integers(0, 3, 40))
    out = subprocess.run([sys.executable, "-c", NODE_PATH, str(data)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("heavy: []")


def test_serving_heterofl_with_secure_aggregation_is_refused_in_one_line_before_the_server_starts(
    tmp_path: Path,
) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text(
        f"""
rounds = 1
[data]
num_clients = 3
[model]
name = "mlp"
framework = "numpy"
[strategy]
name = "heterofl"
[devices]
enabled = true
fleet = {{ orin-nano = 1.0 }}
[secagg]
enabled = true
[deploy]
port = {free_port()}
state = "{tmp_path / "run.db"}"
insecure = true
"""
    )
    res = CliRunner().invoke(cli, ["serve", str(exp), "-q"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "sends part of the model per client, which secagg cannot" in lines[0]
    assert "Traceback" not in res.output
