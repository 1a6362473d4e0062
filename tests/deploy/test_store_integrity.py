"""A state database is checked whole before a resume; a finished run tells its nodes it is over.

One short real run (a gRPC server and a node over loopback) leaves a real SQLite state
file; each test damages a copy in one way and runs the real ``fedge serve --resume``,
which must refuse it in one line naming the file and the problem, before it listens.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedge.config.schema import from_dict
from fedge.deploy.auth import Signer, load_private, new_keys
from fedge.deploy.node import Backoff, Node
from fedge.deploy.server import serve

from .conftest import FEDGE, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The state file of a finished 2-round run, and the node key that trained it."""
    root = tmp_path_factory.mktemp("run")
    key = new_keys(root / "keys", "n0")[0]
    allow = root / "allow.txt"
    allow.write_text(key.with_suffix(".pub").read_text())
    exp = from_dict(
        {
            "seed": 1,
            "rounds": 2,
            "data": {"dataset": "synthetic", "num_clients": 1},
            "model": {"name": "logreg", "framework": "numpy"},
            "training": {"clients_per_round": 1, "local_epochs": 1},
            "deploy": {
                "port": 0,
                "state": str(root / "state.db"),
                "heartbeat_s": 0.2,
                "allow_list": str(allow),
                "wait_s": 60,
                "round_deadline_s": 60,
                "insecure": True,
            },
        }
    )
    ready = threading.Event()
    ports: list[int] = []
    done: list[Any] = []
    server = threading.Thread(
        target=lambda: done.append(serve(exp, on_ready=lambda p: (ports.append(p), ready.set()), linger_s=0.5))
    )
    server.start()
    assert ready.wait(60)
    node = Node(
        f"127.0.0.1:{ports[0]}",
        Signer(load_private(key)),
        partition=0,
        backoff=Backoff(give_up_s=20),
        insecure=True,
    )
    assert node.run() == 2
    server.join(60)
    assert done and len(done[0].history) == 2
    assert not (root / "state.db-wal").exists()
    return root / "state.db", key


def _sql(*statements: str) -> Callable[[Path], None]:
    def damage(db: Path) -> None:
        con = sqlite3.connect(db)
        for s in statements:
            con.execute(s)
        con.commit()
        con.close()

    return damage


def _bytes_at(offset: Callable[[int], int], data: bytes) -> Callable[[Path], None]:
    def damage(db: Path) -> None:
        raw = bytearray(db.read_bytes())
        at = offset(len(raw))
        raw[at : at + len(data)] = data
        db.write_bytes(bytes(raw))

    return damage


def _truncate(db: Path) -> None:
    raw = db.read_bytes()
    db.write_bytes(raw[: len(raw) // 2])


def _flip_checkpoint_bit(db: Path, *, drop_checksum: bool = False) -> None:
    con = sqlite3.connect(db)
    body = bytearray(con.execute("SELECT body FROM checkpoint").fetchone()[0])
    body[len(body) // 2] ^= 0x10
    con.execute("UPDATE checkpoint SET body = ?", (bytes(body),))
    if drop_checksum:  # as an older fedge left it: the bundle's own chunk checksums still catch it
        con.execute("DELETE FROM meta WHERE key = 'checkpoint_sha256'")
    con.commit()
    con.close()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, "damaged state database"),
    # From page 2's b-tree header on: damaged whether the meta table fits one page (a leaf) or more (an interior page).
    "page overwritten": (_bytes_at(lambda n: 4096, b"\xa5" * 3000), "damaged state database"),
    "not a database": (lambda db: db.write_bytes(b"fedge? no. " * 900), "not a SQLite file"),
    "empty file": (lambda db: db.write_bytes(b""), "the state file is empty: there is no run to resume"),
    "file header garbled": (_bytes_at(lambda n: 0, b"SQLite format 4"), "not a SQLite file"),
    "table dropped": (_sql("DROP TABLE nodes"), "table 'nodes' is missing"),
    "column dropped": (_sql("ALTER TABLE rounds DROP COLUMN record"), "table 'rounds' lacks column 'record'"),
    "config not TOML": (_sql("UPDATE meta SET value = 'rounds = [[' WHERE key = 'config'"), "not valid TOML"),
    "config missing": (_sql("DELETE FROM meta WHERE key = 'config'"), "the run's config is missing"),
    "config refused": (
        _sql("UPDATE meta SET value = 'rounds = \"many\"' WHERE key = 'config'"),
        "the stored config is refused",
    ),
    "security not JSON": (_sql("UPDATE meta SET value = '{\"tls' WHERE key = 'security'"), "security record"),
    "transforms not JSON": (_sql("UPDATE meta SET value = '[{' WHERE key = 'transforms'"), "transforms record"),
    "checkpoint bit flipped": (_flip_checkpoint_bit, "the checkpoint does not match its SHA-256"),
    "old store, checkpoint bit flipped": (
        lambda db: _flip_checkpoint_bit(db, drop_checksum=True),
        "the checkpoint does not decode",
    ),
    "checkpoint row deleted": (_sql("DELETE FROM checkpoint"), "2 rounds are saved but their checkpoint is missing"),
    "checkpoint header garbled": (
        _sql("UPDATE checkpoint SET header = x'0a0b0c'"),
        "the checkpoint does not match its SHA-256",
    ),
    "round record garbled": (
        _sql("UPDATE rounds SET record = '{\"round\": ' WHERE round = 1"),
        "the record of round 1 does not parse",
    ),
    "round record lost": (_sql("DELETE FROM rounds WHERE round = 1"), "the checkpoint is of round 2"),
    "no run in it": (_sql("DELETE FROM meta WHERE key = 'run_id'"), "holds no run to resume"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_state_database_is_one_line_and_exit_2_before_serving(
    kind: str, finished_run: tuple[Path, Path], tmp_path: Path
) -> None:
    damage, problem = DAMAGE[kind]
    db = tmp_path / "copy.db"
    shutil.copyfile(finished_run[0], db)
    damage(db)
    port = free_port()
    res = subprocess.run(
        [*FEDGE, "serve", "--state", str(db), "--resume", "--port", str(port), "--insecure"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(lines) == 1, lines  # no traceback, no "listening on", no log line
    assert lines[0].startswith(f"error: {db}: ") and problem in lines[0], lines[0]
    assert res.stdout == ""


def test_resume_without_a_state_file_says_there_is_no_run(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    res = subprocess.run(
        [*FEDGE, "serve", "--state", str(db), "--resume", "--port", str(free_port()), "--insecure"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: {db}: no run to resume"]
    assert not db.exists()


def test_resuming_a_finished_run_tells_its_node_to_stop_then_exits_0(
    finished_run: tuple[Path, Path], tmp_path: Path
) -> None:
    db = tmp_path / "copy.db"
    shutil.copyfile(finished_run[0], db)
    port = free_port()
    log = tmp_path / "server.log"
    args = ["serve", "--state", str(db), "--resume", "--port", str(port), "--insecure"]
    with log.open("wb") as out:
        server = subprocess.Popen([*FEDGE, *args, "--set", "deploy.node_timeout_s=3"], stdout=out, stderr=out)
    node: subprocess.Popen[str] | None = None
    try:
        end = time.monotonic() + 90
        while "listening on" not in log.read_text() and server.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert "listening on" in log.read_text(), log.read_text()[-2000:]
        join = ["join", "--server", f"127.0.0.1:{port}", "--key", str(finished_run[1]), "--partition", "0"]
        node = subprocess.Popen(
            [*FEDGE, *join, "--insecure", "--give-up", "30", "--state-dir", str(tmp_path), "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        node_out, node_err = node.communicate(timeout=90)
        assert node.returncode == 0, node_err[-2000:] + log.read_text()[-2000:]
        assert "trained 0 rounds" in node_out
        assert server.wait(90) == 0, log.read_text()[-2000:]
    finally:
        for p in (server, node):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    text = log.read_text()
    assert "event=already_finished" in text
    summary = [line for line in text.splitlines() if line.startswith("run ")]
    assert len(summary) == 1 and "the run was already finished (all 2 rounds done)" in summary[0], text[-2000:]
    assert "its nodes were told to stop" in summary[0]


def test_a_run_with_no_checkpoint_yet_resumes_from_round_1_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fedge.deploy.server import prepare

    exp = from_dict({"rounds": 3, "deploy": {"state": str(tmp_path / "s.db"), "insecure": True}})
    cfg = exp.section("deploy")
    first = prepare(exp, cfg, resume=False)
    first.store.close()
    with caplog.at_level("INFO", logger="fedge.deploy"):
        again = prepare(exp, cfg, resume=True)
    again.store.close()
    assert again.run_id == first.run_id and again.state is None and again.finished is None
    assert f"run={first.run_id}" in caplog.text and "starting from round 1" in caplog.text


def test_a_checkpoint_that_cannot_be_written_is_a_one_line_error(tmp_path: Path) -> None:
    import numpy as np

    from fedge.core.errors import DataError
    from fedge.deploy.store import Store
    from fedge.simulation.history import RoundRecord
    from fedge.strategies.base import StrategyState

    store = Store(tmp_path / "s.db")
    state = StrategyState(params=[np.zeros(3, np.float32)], round_num=1)
    store.checkpoint(RoundRecord(round=1, participants=1), state)
    other = sqlite3.connect(tmp_path / "s.db", timeout=0.1)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the file: the write cannot happen
    store._db.execute("PRAGMA busy_timeout = 100")
    try:
        with pytest.raises(DataError) as err:
            store.checkpoint(RoundRecord(round=2, participants=1), StrategyState(params=state.params, round_num=2))
    finally:
        other.rollback()
        other.close()
    assert str(err.value).startswith(f"{tmp_path / 's.db'}: cannot write the checkpoint of round 2 (")
    assert store.last_round() == 1
    store.close()
