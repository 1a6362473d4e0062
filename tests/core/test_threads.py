"""`[training] threads`: each check runs in a fresh interpreter, since thread pools are per process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedge.config.schema import from_dict
from fedge.core.errors import ConfigError
from fedge.core.threads import usable_cpus

APPLY = """\
import os, sys
import torch
from fedge.core.threads import apply_threads
n = apply_threads(int(sys.argv[1]), sys.argv[2])
print(n, torch.get_num_threads(), os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"])
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any thread setting the user might have exported, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.pop("OPENBLAS_NUM_THREADS", None)
    return {**env, **extra}


def apply_in_child(threads: int, backend: str, env: dict[str, str], cwd: Path) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", APPLY, str(threads), backend],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [int(v) for v in out.stdout.split()]


@pytest.mark.parametrize(
    ("threads", "backend", "exported", "expected"),
    [
        (3, "sequential", "", 3),
        (0, "sequential", "", 1),
        (0, "debug", "", 1),
        (0, "processes", "", 1),
        (0, "sequential", "2", 2),
        (0, "vectorized", "", min(usable_cpus(), 4)),
    ],
)
def test_apply_threads_sets_torch_and_the_environment(
    tmp_path: Path, threads: int, backend: str, exported: str, expected: int
) -> None:
    env = clean_env(OMP_NUM_THREADS=exported) if exported else clean_env()
    assert apply_in_child(threads, backend, env, tmp_path) == [expected] * 4


def test_fedge_run_applies_the_configured_threads(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from fedge.plugins import Hooks, Plugin, registry\n"
        "from fedge.engine import Callback\n"
        "class P(Callback):\n"
        "    def on_run_start(self, state, rounds):\n"
        "        import os, torch\n"
        "        print('threads', torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], flush=True)\n"
        "registry.add(Plugin('probe', __name__, every_run=True), Hooks(callbacks=[lambda exp, built: [P()]]))\n"
        "sys.argv = ['fedge', *sys.argv[1:]]\n"
        "from fedge.cli.main import main\n"
        "main()\n"
    )
    (tmp_path / "exp.toml").write_text(
        "rounds = 1\n[data]\nnum_clients = 4\n[model]\nhidden = [8]\n"
        "[training]\nclients_per_round = 2\nlocal_epochs = 1\nthreads = 2\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, "run", "exp.toml", "-q", "-o", "out"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "threads 2 2" in out.stdout


def test_schema_accepts_threads_and_rejects_negative() -> None:
    assert from_dict({"training": {"threads": 4}}).training.threads == 4
    assert from_dict({}).training.threads == 0
    with pytest.raises(ConfigError, match=r"training\.threads: must be >= 0") as err:
        from_dict({"training": {"threads": -1}})
    assert "\n" not in str(err.value)


def test_auto_follows_the_users_export_not_an_earlier_run(tmp_path: Path) -> None:
    script = (
        "import torch\n"
        "from fedge.core.threads import apply_threads\n"
        "print(apply_threads(3), apply_threads(0, 'sequential'), apply_threads(0, 'vectorized'))\n"
    )
    cmd = [sys.executable, "-c", script]
    plain = subprocess.run(cmd, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert plain.stdout.split() == ["3", "1", str(min(usable_cpus(), 4))], plain.stderr
    exported = subprocess.run(
        cmd, cwd=tmp_path, env=clean_env(OMP_NUM_THREADS="2"), capture_output=True, text=True, timeout=120
    )
    assert exported.stdout.split() == ["3", "2", "2"], exported.stderr
