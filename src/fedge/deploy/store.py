"""The server's state in SQLite: run config, security settings, node registry, per-round metrics, checkpoints.

WAL mode, and each round's record and full :class:`StrategyState` (parameters, slots,
scalars) are written in one transaction, so a ``kill -9`` at any instant leaves either
the previous round's state or this round's, never a mix. Tensors are stored through the
same pickle-free bundle encoding as the wire (:mod:`fedge.deploy.wire`), with the
SHA-256 of the checkpoint beside it.

The file is created mode 0600 (SQLite gives its ``-wal`` and ``-shm`` files the same
mode): it holds the run's config and node registry. :meth:`Store.open` opens a store to
resume and checks it whole first (schema, SQLite integrity, every stored value, the
checkpoint against its checksum and the round records, writability), so a damaged file
is a one-line :class:`DataError` naming it before any node is served.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.core.errors import DataError
from fedge.deploy import wire
from fedge.deploy.proto import pb
from fedge.engine.state import RoundState
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
COLUMNS = {
    "meta": ("key", "value"),
    "nodes": ("node_id", "client_id", "profile", "first_seen", "last_seen"),
    "rounds": ("round", "record"),
    "checkpoint": ("id", "round", "header", "body"),
}
"""The tables and columns :data:`SCHEMA` makes; a store to resume must have them all."""
SQLITE_MAGIC = b"SQLite format 3\x00"
SIDECARS = ("-wal", "-shm")


def checksum(header: bytes, body: bytes) -> str:
    """The checkpoint's SHA-256 (hex) over header and body; stored in ``meta`` with it."""
    return hashlib.sha256(len(header).to_bytes(8, "little") + header + body).hexdigest()


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


@dataclass(frozen=True)
class Opened:
    """What :meth:`Store.open` found: the run, its checkpoint (None: no round done yet) and rounds."""

    run_id: str
    config: dict[str, Any]
    state: StrategyState | None
    records: list[RoundRecord]
    finished: str | None
    """Why the run ended (all rounds done, or an early stop that ends it); None while it goes on."""


def _private(path: Path) -> None:
    """Create ``path`` mode 0600 before SQLite opens it, and take group and other access off an older one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for f in (path, *(path.with_name(path.name + s) for s in SIDECARS)):
        if f.exists() and f.stat().st_mode & 0o077:
            f.chmod(0o600)


class Store:
    """One SQLite file per run; safe to use from the server's threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            _private(self.path)
            with self.path.open("rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise DataError(f"{self.path}: cannot open the state file: {exc.strerror}") from None
        if head and head != SQLITE_MAGIC:
            raise DataError(f"{self.path}: not a usable fedge state database (not a SQLite file: wrong header)")
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a usable fedge state database ({exc})") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if head:
                self._check_schema()
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise self._damaged(str(exc)) from None
        except BaseException:
            self._db.close()
            raise
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path | str) -> tuple[Store, Opened]:
        """Open an existing store to resume, after checking all of it; every problem is a one-line DataError."""
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: no run to resume")
        if p.stat().st_size == 0:
            raise DataError(f"{p}: the state file is empty: there is no run to resume")
        store = cls(p)
        try:
            return store, store._verify()
        except BaseException:
            store.close()
            raise

    def _damaged(self, problem: str) -> DataError:
        """The one-line error for a damaged store (SQLite's own reports can span lines)."""
        return DataError(f"{self.path}: damaged state database: {' '.join(problem.split())}")

    def _check_schema(self) -> None:
        for table, want in COLUMNS.items():
            have = [str(r[1]) for r in self._db.execute(f"PRAGMA table_info({table})")]
            if not have:
                raise self._damaged(f"table {table!r} is missing")
            missing = [c for c in want if c not in have]
            if missing:
                raise self._damaged(f"table {table!r} lacks column {missing[0]!r}")

    def _verify(self) -> Opened:
        try:
            problems = [str(r[0]) for r in self._db.execute("PRAGMA integrity_check(1)")]
            if problems != ["ok"]:
                raise self._damaged(f"SQLite integrity check: {problems[0]}")
            opened = self._check_values()
            self._probe_write()
        except sqlite3.DatabaseError as exc:
            raise self._damaged(str(exc)) from None
        return opened

    def _check_values(self) -> Opened:
        run_id = self.meta("run_id")
        text = self.meta("config")
        if run_id is None:
            raise DataError(f"{self.path}: holds no run to resume (no run id)")
        if text is None:
            raise self._damaged("the run's config is missing")
        try:
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise self._damaged(f"the stored config is not valid TOML ({exc})") from None
        for key, kind in (("security", dict), ("transforms", list)):
            value = self.meta(key)
            try:
                parsed = None if value is None else json.loads(value)
            except ValueError as exc:
                raise self._damaged(f"the stored {key} record is not valid JSON ({exc})") from None
            if parsed is not None and not isinstance(parsed, kind):
                raise self._damaged(f"the stored {key} record is not a JSON {kind.__name__}")
        self.influence_window()
        records = self._checked_records()
        state = self.load_state()
        done = state.round_num if state is not None else 0
        if state is None and records:
            raise self._damaged(f"{len(records)} rounds are saved but their checkpoint is missing")
        if [r.round for r in records] != list(range(1, done + 1)):
            saved = [r.round for r in records]
            raise self._damaged(f"the checkpoint is of round {done} but the saved rounds are {_span(saved)}")
        return Opened(run_id, config, state, records, self.meta("finished"))

    def _checked_records(self) -> list[RoundRecord]:
        with self._lock:
            rows = self._db.execute("SELECT round, record FROM rounds ORDER BY round").fetchall()
        out = []
        for n, text in rows:
            try:
                rec = RoundRecord.from_json(json.loads(text))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise self._damaged(f"the record of round {n} does not parse ({type(exc).__name__})") from None
            if rec.round != n:
                raise self._damaged(f"the record stored as round {n} is of round {rec.round}")
            out.append(rec)
        return out

    def _probe_write(self) -> None:
        """Rewrite the checkpoint and a meta row, so a file that cannot take the next checkpoint fails now."""
        try:
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('opened_at', ?)", (repr(time.time()),))
                db.execute("UPDATE checkpoint SET header = header, body = body")
        except sqlite3.OperationalError as exc:
            raise DataError(f"{self.path}: the state database cannot be written ({exc})") from None

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
    def checkpoint(
        self,
        record: RoundRecord,
        state: StrategyState,
        transforms: list[Any] | None = None,
        influence: list[list[float]] | None = None,
    ) -> None:
        """Write the round's record, the full strategy state, the transforms' state and the
        influence bound's window in one transaction."""
        header, body = pack_state(state)
        rec = json.dumps(record.to_json(), default=str)
        try:
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO rounds VALUES (?, ?)", (record.round, rec))
                db.execute("INSERT OR REPLACE INTO checkpoint VALUES (1, ?, ?, ?)", (state.round_num, header, body))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('checkpoint_sha256', ?)", (checksum(header, body),))
                if transforms is not None:
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('transforms', ?)", (json.dumps(transforms),))
                if influence is not None:
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('influence', ?)", (json.dumps(influence),))
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: cannot write the checkpoint of round {record.round} ({exc})") from None

    def save_round(self, record: RoundRecord, state: RoundState) -> None:
        """Checkpoint a round's whole :class:`~fedge.engine.state.RoundState` with its record."""
        self.checkpoint(record, state.strategy, list(state.transforms), state.window())

    def round_state(self, strategy: StrategyState) -> RoundState:
        """The last checkpoint as a :class:`~fedge.engine.state.RoundState`, around its (checked) strategy state."""
        return RoundState.stored(strategy, self.transform_states(), self.influence_window())

    def transform_states(self) -> list[Any] | None:
        """The pipeline's transform states at the last checkpoint (None: none stored)."""
        text = self.meta("transforms")
        return None if text is None else list(json.loads(text))

    def influence_window(self) -> list[list[float]] | None:
        """The influence bound's window at the last checkpoint (None: none stored)."""
        text = self.meta("influence")
        if text is None:
            return None
        try:
            rows = json.loads(text)
            if not all(isinstance(r, list) and len(r) == 3 for r in rows):
                raise ValueError("rows of three numbers expected")
            return [[float(x) for x in r] for r in rows]
        except (ValueError, TypeError) as exc:
            raise self._damaged(f"the influence window is unreadable ({exc})") from None

    def load_state(self) -> StrategyState | None:
        """The last checkpoint, checked against its stored SHA-256 (older stores have none) and its round."""
        with self._lock:
            row = self._db.execute("SELECT round, header, body FROM checkpoint WHERE id = 1").fetchone()
        if row is None:
            return None
        header, body = bytes(row[1]), bytes(row[2])
        want = self.meta("checkpoint_sha256")
        if want is not None and want != checksum(header, body):
            raise self._damaged("the checkpoint does not match its SHA-256")
        try:
            state = unpack_state(header, body)
        except Exception as exc:  # any decoding failure of stored bytes is damage, named in one line
            raise self._damaged(f"the checkpoint does not decode ({type(exc).__name__}: {exc})") from None
        if state.round_num != row[0]:
            raise self._damaged(f"the checkpoint row says round {row[0]}, its state round {state.round_num}")
        return state

    def records(self) -> list[RoundRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM rounds ORDER BY round").fetchall()
        return [RoundRecord.from_json(json.loads(r[0])) for r in rows]

    def set_finished(self, reason: str) -> None:
        """Note that the run is over (all rounds, or an early stop that ends it): a resume only tells nodes so."""
        self.set_meta(finished=reason)

    def last_round(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT round FROM checkpoint WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])


def _span(rounds: list[int]) -> str:
    if not rounds:
        return "none"
    return f"{rounds[0]}..{rounds[-1]} ({len(rounds)} records)"
