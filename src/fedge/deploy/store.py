"""The server's state in SQLite: run config, security settings, node registry, per-round metrics, checkpoints.

WAL mode, and each round's record and full :class:`StrategyState` (parameters, slots,
scalars) are written in one transaction, so a ``kill -9`` at any instant leaves either
the previous round's state or this round's, never a mix. Tensors are stored through the
same pickle-free bundle encoding as the wire (:mod:`fedge.deploy.wire`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fedge.core.errors import DataError
from fedge.deploy import wire
from fedge.deploy.proto import pb
from fedge.simulation.history import RoundRecord
from fedge.strategies.base import StrategyState

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, client_id INTEGER NOT NULL UNIQUE, profile TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (round INTEGER PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), round INTEGER NOT NULL,
    header BLOB NOT NULL, body BLOB NOT NULL);
"""


def pack_state(state: StrategyState) -> tuple[bytes, bytes]:
    out = wire.encode(
        {
            "params": list(state.params),
            "round": state.round_num,
            "slots": {k: list(v) for k, v in state.slots.items()},
            "scalars": {k: float(v) for k, v in state.scalars.items()},
        }
    )
    return out.header.SerializeToString(), bytes(out.body)


def unpack_state(header: bytes, body: bytes) -> StrategyState:
    h = wire.parse(pb.BundleHeader, header)
    size = h.chunk_size
    chunks = (pb.Chunk(index=i, data=body[i * size : (i + 1) * size]) for i in range(len(h.chunk_sha256)))
    tree = wire.decode(h, chunks, max_bytes=len(body))
    f32 = [np.array(p, dtype=np.float32) for p in tree["params"]]
    return StrategyState(
        params=f32,
        round_num=int(tree["round"]),
        slots={k: [np.array(p, dtype=np.float32) for p in v] for k, v in tree["slots"].items()},
        scalars={k: float(v) for k, v in tree["scalars"].items()},
    )


class Store:
    """One SQLite file per run; safe to use from the server's threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a usable fedge state database ({exc})") from None
        self._lock = threading.Lock()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- run metadata ------------------------------------------------------------
    def set_meta(self, **values: str) -> None:
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def security(self) -> dict[str, Any] | None:
        """The run's stored security settings (see :mod:`fedge.deploy.security`); None for older stores."""
        text = self.meta("security")
        return None if text is None else dict(json.loads(text))

    def set_security(self, record: Mapping[str, Any]) -> None:
        self.set_meta(security=json.dumps(dict(record), sort_keys=True))

    # -- node registry -----------------------------------------------------------
    def client_of(self, node_id: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT client_id FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
        return None if row is None else int(row[0])

    def node_of(self, client_id: int) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT node_id FROM nodes WHERE client_id = ?", (client_id,)).fetchone()
        return None if row is None else str(row[0])

    def register(self, node_id: str, client_id: int, profile: str) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO nodes VALUES (?, ?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE "
                "SET profile = excluded.profile, last_seen = excluded.last_seen",
                (node_id, client_id, profile, now, now),
            )

    def nodes(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT node_id, client_id, profile, first_seen, last_seen FROM nodes ORDER BY client_id"
            ).fetchall()
        return [dict(zip(("node_id", "client_id", "profile", "first_seen", "last_seen"), r, strict=True)) for r in rows]

    def used_clients(self) -> set[int]:
        with self._lock:
            return {int(r[0]) for r in self._db.execute("SELECT client_id FROM nodes")}

    # -- rounds and checkpoints --------------------------------------------------
    def checkpoint(self, record: RoundRecord, state: StrategyState, transforms: list[Any] | None = None) -> None:
        """Write the round's record, the full strategy state and the transforms' state in one transaction."""
        header, body = pack_state(state)
        rec = json.dumps(record.to_json(), default=str)
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO rounds VALUES (?, ?)", (record.round, rec))
            db.execute("INSERT OR REPLACE INTO checkpoint VALUES (1, ?, ?, ?)", (state.round_num, header, body))
            if transforms is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('transforms', ?)", (json.dumps(transforms),))

    def transform_states(self) -> list[Any] | None:
        """The pipeline's transform states at the last checkpoint (None: none stored)."""
        text = self.meta("transforms")
        return None if text is None else list(json.loads(text))

    def load_state(self) -> StrategyState | None:
        with self._lock:
            row = self._db.execute("SELECT header, body FROM checkpoint WHERE id = 1").fetchone()
        return None if row is None else unpack_state(bytes(row[0]), bytes(row[1]))

    def records(self) -> list[RoundRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM rounds ORDER BY round").fetchall()
        return [RoundRecord.from_json(json.loads(r[0])) for r in rows]

    def last_round(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT round FROM checkpoint WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])
