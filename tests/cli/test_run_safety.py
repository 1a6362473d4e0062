"""`fedge run` keeps the user's files and finished rounds safe: real subprocess runs of the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

FEDGE = [sys.executable, "-m", "fedge.cli.main"]

TINY = """\
rounds = 2
[data]
num_clients = 4
[model]
framework = "numpy"
hidden = [8]
[training]
clients_per_round = 2
local_epochs = 1
batch_size = 50
"""

PROBE = """\
import signal
import sys
from importlib.abc import MetaPathFinder

# Ctrl-C reaches the run even when the test suite itself was started with SIGINT ignored
# (a background job of a non-interactive shell), which every child would inherit.
signal.signal(signal.SIGINT, signal.default_int_handler)

from fedge.plugins import Hooks, Plugin, registry
from fedge.engine import Callback

BLOCKED = {name for name in sys.argv[1].split(",") if name}


class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


class Probe(Callback):
    def on_run_start(self, state, rounds):
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else -1
        print(f"[probe] run start threads={threads}", flush=True)

    def on_round_end(self, record, state):
        print(f"[probe] round {record.round}", flush=True)

    def on_run_end(self, history, state):
        print(f"[probe] run end after {len(history)} rounds", flush=True)


sys.meta_path.insert(0, Block())
registry.add(Plugin("probe", __name__, every_run=True), Hooks(callbacks=[lambda exp, built: [Probe()]]))
sys.argv = ["fedge", *sys.argv[2:]]
from fedge.cli.main import main

main()
"""
"""Runs the CLI's ``main()`` with a callback that prints each round, and with the modules named
in its first argument made impossible to import (as if that extra were not installed)."""


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def fedge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDGE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env())


def probe_cmd(cwd: Path, blocked: str, *args: str) -> list[str]:
    (cwd / "probe.py").write_text(PROBE)
    return [sys.executable, str(cwd / "probe.py"), blocked, *args]


def probed(*args: str, cwd: Path, blocked: str = "") -> subprocess.CompletedProcess[str]:
    cmd = probe_cmd(cwd, blocked, *args)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env())


def tiny(tmp_path: Path) -> Path:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "tiny.toml").write_text(TINY)
    return tmp_path


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rows(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_users_folder_is_refused_and_kept(tmp_path: Path) -> None:
    cwd = tiny(tmp_path)
    (cwd / "mine").mkdir()
    (cwd / "mine" / "thesis.txt").write_text("years of work")
    before = listing(cwd)
    for args in (["-o", "mine"], ["-o", "mine", "--overwrite"]):
        line = one_error_line(fedge("run", "tiny.toml", "-q", *args, cwd=cwd))
        assert "mine: exists, is not empty and is not a fedge run" in line
    assert listing(cwd) == before
    assert sorted(p.name for p in cwd.iterdir()) == ["mine", "tiny.toml"]


@pytest.mark.parametrize("args", [["-o", "."], ["-o", "..", "--overwrite"], ["--set", "output=."]])
def test_the_working_directory_is_never_the_output(tmp_path: Path, args: list[str]) -> None:
    cwd = tiny(tmp_path / "project")
    (cwd / "notes.txt").write_text("keep me")
    before = listing(tmp_path)
    line = one_error_line(fedge("run", "tiny.toml", "-q", *args, cwd=cwd))
    assert "is the working directory or contains it" in line
    assert listing(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_an_earlier_run_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    cwd = tiny(tmp_path)
    assert fedge("run", "tiny.toml", "-q", "--rounds", "1", "-o", "out", cwd=cwd).returncode == 0
    first = listing(cwd / "out")
    line = one_error_line(fedge("run", "tiny.toml", "-q", "-o", "out", cwd=cwd))
    assert "holds an earlier fedge run; pass --overwrite" in line
    assert listing(cwd / "out") == first
    again = fedge("run", "tiny.toml", "-q", "--rounds", "2", "-o", "out", "--overwrite", cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert [r["round"] for r in rows(cwd / "out")] == [1, 2]
    assert sorted(p.name for p in cwd.iterdir()) == ["out", "tiny.toml"]  # no temporary or old copy left


def test_the_default_output_gets_a_new_name_each_run(tmp_path: Path) -> None:
    cwd = tiny(tmp_path)
    assert fedge("run", "tiny.toml", "-q", "--rounds", "1", cwd=cwd).returncode == 0
    first = cwd / "runs" / "digits-fedavg-seed0"
    kept = listing(first)
    second = fedge("run", "tiny.toml", "-q", "--rounds", "2", cwd=cwd)
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in (cwd / "runs").iterdir()) == ["digits-fedavg-seed0", "digits-fedavg-seed0-2"]
    assert listing(first) == kept
    assert len(rows(cwd / "runs" / "digits-fedavg-seed0-2")) == 2


def test_an_unwritable_output_fails_before_training(tmp_path: Path) -> None:
    cwd = tiny(tmp_path)
    (cwd / "afile").write_text("not a folder")
    before = listing(cwd)
    out = probed("run", "tiny.toml", "-q", "-o", "afile/run", cwd=cwd)
    line = one_error_line(out)
    assert "afile/run: cannot create the output folder" in line and "is a file, not a folder" in line
    assert "[probe]" not in out.stdout  # no round started
    assert {k: v for k, v in listing(cwd).items() if k != "probe.py"} == before
    line = one_error_line(fedge("run", "tiny.toml", "-q", "-o", "afile", "--overwrite", cwd=cwd))
    assert "afile: exists and is not a folder" in line
    assert listing(cwd) == {**before, "probe.py": (cwd / "probe.py").read_bytes()}


def test_set_overrides_a_config_key(tmp_path: Path) -> None:
    cwd = tiny(tmp_path)
    out = fedge(
        "run", "tiny.toml", "-q", "--rounds", "1", "-o", "out",
        "--set", "training.lr=0.1", "--set", "strategy.name=fedprox", "--set", "model.hidden=[4]",
        cwd=cwd,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    saved = tomllib.loads((cwd / "out" / "config.toml").read_text())
    assert saved["training"]["lr"] == 0.1
    assert saved["strategy"]["name"] == "fedprox"
    assert saved["model"]["hidden"] == [4]
    assert saved["training"]["clients_per_round"] == 2  # the file's other keys stay


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("training.nope=1", "unknown key 'training.nope'"),
        ("training.lr", "--set 'training.lr': expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("training.lr=fast", "training.lr: expected a number"),
        ("training.lr.x=1", "'training.lr' is a value, not a section"),
        ("training.threads=-1", "training.threads: must be >= 0"),
    ],
)
def test_bad_set_is_one_line_naming_the_key(tmp_path: Path, item: str, message: str) -> None:
    cwd = tiny(tmp_path)
    line = one_error_line(fedge("run", "tiny.toml", "-q", "-o", "out", "--set", item, cwd=cwd))
    assert message in line
    assert sorted(p.name for p in cwd.iterdir()) == ["tiny.toml"]


def test_too_many_clients_per_round_fails_before_training(tmp_path: Path) -> None:
    cwd = tiny(tmp_path)
    out = probed("run", "tiny.toml", "-q", "-o", "out", "--set", "training.clients_per_round=5", cwd=cwd)
    line = one_error_line(out)
    assert "training.clients_per_round = 5 is larger than the 4 clients" in line
    assert "[probe]" not in out.stdout
    assert sorted(p.name for p in cwd.iterdir()) == ["probe.py", "tiny.toml"]


def test_ctrl_c_keeps_the_finished_rounds_as_a_partial_run(tmp_path: Path) -> None:
    cwd = tiny(tmp_path)
    cmd = probe_cmd(cwd, "", "run", "tiny.toml", "-q", "--rounds", "1000000", "-o", "out")
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), start_new_session=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("[probe] round"):
                break
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted; the finished rounds are in")
    run_dir = cwd / "out"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["partial"] is True and summary["stopped"] == "interrupted"
    history = rows(run_dir)
    assert len(history) >= 1 and summary["rounds"] == len(history)
    assert f"[probe] run end after {len(history)} rounds" in stdout  # trackers are ended, so they flush
    assert [r["round"] for r in history] == list(range(1, len(history) + 1))
    assert (run_dir / "model.npz").is_file() and (run_dir / "config.toml").is_file()
    assert sorted(p.name for p in cwd.iterdir()) == ["out", "probe.py", "tiny.toml"]


@pytest.mark.parametrize(
    ("lr", "message"),
    [("1e6", "over 1000 × the initial"), ("1e30", "every client's update had NaN or Inf values in round 1")],
)
def test_a_diverging_run_stops_with_one_line_and_keeps_a_partial_run(tmp_path: Path, lr: str, message: str) -> None:
    cwd = tiny(tmp_path)
    out = fedge(
        "run", "tiny.toml", "-q", "--rounds", "20", "-o", "out",
        "--set", "model.framework=torch", "--set", f"training.lr={lr}",
        cwd=cwd,
    )  # fmt: skip
    line = one_error_line(out)
    assert "training diverged" in line and message in line and "lower training.lr" in line
    summary = json.loads((cwd / "out" / "summary.json").read_text())
    assert summary["partial"] is True and summary["stopped"] == "diverged"
    assert 1 <= len(rows(cwd / "out")) < 20
    assert (cwd / "out" / "model.npz").is_file()


def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    cwd = tiny(tmp_path)
    torchless = probed("run", "tiny.toml", "-q", "-o", "t", "--set", "model.framework=torch", cwd=cwd, blocked="torch")
    assert "needs PyTorch, which is not installed: pip install 'fedge[torch]'" in one_error_line(torchless)
    assert "[probe]" not in torchless.stdout and not (cwd / "t").exists()
    assert fedge("run", "tiny.toml", "-q", "--rounds", "1", "-o", "run", cwd=cwd).returncode == 0
    plotless = probed("report", "run", "-o", "report", cwd=cwd, blocked="matplotlib")
    assert "matplotlib" in one_error_line(plotless) and "pip install 'fedge[report]'" in plotless.stderr
    assert not (cwd / "report").exists()
