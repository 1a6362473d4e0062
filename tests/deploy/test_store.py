"""The SQLite state: checkpoints round-trip, and a kill -9 mid-write corrupts nothing."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedge.core.errors import DataError
from fedge.deploy.store import Store
from fedge.simulation.history import RoundRecord
from fedge.strategies.base import StrategyState


def state(r: int) -> StrategyState:
    return StrategyState(
        params=[np.full((3, 4), r, np.float32), np.arange(5, dtype=np.float32)],
        round_num=r,
        slots={"m": [np.full(4, -r, np.float32)], "v": []},
        scalars={"num_clients": 10.0, "t": float(r)},
    )


def test_checkpoint_round_trips_the_full_strategy_state(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.load_state() is None
    store.checkpoint(RoundRecord(round=1, participants=3, train_loss=0.5), state(1))
    store.checkpoint(RoundRecord(round=2, participants=2), state(2))
    got = store.load_state()
    assert got is not None and got.round_num == 2
    assert np.array_equal(got.params[0], state(2).params[0]) and got.params[0].dtype == np.float32
    assert np.array_equal(got.slots["m"][0], state(2).slots["m"][0]) and got.slots["v"] == []
    assert got.scalars == {"num_clients": 10.0, "t": 2.0}
    recs = store.records()
    assert [r.round for r in recs] == [1, 2] and recs[0].train_loss == 0.5 and math.isnan(recs[1].train_loss)
    store.close()
    assert Store(tmp_path / "s.db").last_round() == 2


def test_the_database_is_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_node_registry_keeps_client_ids(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.register("aa", 3, "pi")
    store.register("aa", 3, "jetson")
    assert store.client_of("aa") == 3 and store.node_of(3) == "aa" and store.used_clients() == {3}
    assert store.nodes()[0]["profile"] == "jetson"


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not sqlite" * 100)
    with pytest.raises(DataError, match="not a usable fedge state database"):
        Store(bad)


WRITER = """
import sys, numpy as np
from fedge.deploy.store import Store
from fedge.simulation.history import RoundRecord
from fedge.strategies.base import StrategyState
s = Store(sys.argv[1])
r = 0
while True:
    r += 1
    p = [np.full(200_000, r, np.float32)]
    s.checkpoint(RoundRecord(round=r, participants=1), StrategyState(params=p, round_num=r,
                 slots={"m": [np.full(1000, r, np.float32)]}))
    print(r, flush=True)
"""


@pytest.mark.integration
def test_kill_9_while_checkpointing_leaves_a_consistent_state(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for _ in range(8):
            proc.stdout.readline()
        time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = Store(db)
    st = store.load_state()
    assert st is not None and st.round_num >= 8
    assert np.all(st.params[0] == st.round_num) and np.all(st.slots["m"][0] == st.round_num)
    assert store.records()[-1].round == st.round_num
    store.close()
