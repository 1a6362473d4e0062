"""A deployed DP run killed mid-way and resumed reports the ε and the model of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.config import load
from fedge.experiment import load_params_npz
from fedge.federation import build, execute

from .conftest import free_port, simulated_with_noise_key
from .test_integration import last_round, processes, spawn, wait_for

pytestmark = pytest.mark.integration

PRIVACY = """
[privacy]
mode = "central"
clip_norm = 0.5
noise_multiplier = 1.1
"""


JOIN = ["join", "--insecure", "--give-up", "60", "--server"]


def epsilons(db: Path) -> list[float]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT record FROM rounds ORDER BY round").fetchall()
    return [float(json.loads(r)["extra"]["epsilon"]) for (r,) in rows]


def test_a_dp_server_killed_after_round_2_resumes_with_the_uninterrupted_epsilon(
    tmp_path: Path, make_keys: Any, write_experiment: Any
) -> None:
    keys, allow = make_keys(3)
    port = free_port()
    # Enough local work that a round takes a while: the kill must land between checkpoints, not after the last.
    exp_path = write_experiment(allow=allow, clients=3, rounds=6, port=port, epochs=40)
    text = exp_path.read_text().replace('name = "fedavg"', 'name = "fedavg"\nweighting = "uniform"')
    exp_path.write_text(text + PRIVACY)
    expected_eps = [r.extra["epsilon"] for r in execute(build(load(str(exp_path)))).history]
    assert len(set(expected_eps)) == 6  # ε grows every round
    db, out = tmp_path / "state.db", tmp_path / "out"
    with processes() as procs:
        first = spawn(procs, ["serve", str(exp_path)], tmp_path / "server1.log")
        nodes = [
            spawn(
                procs,
                [*JOIN, f"127.0.0.1:{port}", "--key", str(k), "--partition", str(i), "--state-dir", str(tmp_path)],
                tmp_path / f"node{i}.log",
            )
            for i, k in enumerate(keys)
        ]
        wait_for(lambda: last_round(db) >= 2, 90, "two rounds")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert last_round(db) < 6, "the run must be interrupted, not finished"
        second = spawn(procs, ["serve", str(exp_path), "--resume", "-o", str(out)], tmp_path / "server2.log")
        assert second.wait(120) == 0, (tmp_path / "server2.log").read_text()[-2000:]
        assert all(n.wait(30) == 0 for n in nodes)
    # The resumed server drew its noise from the secret its first start kept in the state file.
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        (key,) = con.execute("SELECT value FROM meta WHERE key = 'dp_noise_key'").fetchone()
    reference = simulated_with_noise_key(load(str(exp_path)), int(key))
    assert epsilons(db) == pytest.approx(expected_eps, rel=1e-9)
    written = [json.loads(line)["extra"]["epsilon"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert written == pytest.approx(expected_eps, rel=1e-9)
    for a, b in zip(load_params_npz(out / "model.npz"), reference.state.params, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
