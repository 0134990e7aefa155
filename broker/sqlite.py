"""A small, thread-safe SQLite wrapper: the outbox, inbox, case table, handling log and ledger.

Every database file is private (``0600`` in a ``0700`` directory, see
:mod:`broker.private`); SQLite gives its ``-wal`` and ``-shm`` files the same mode.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from broker.errors import ConfigError
from broker.private import private_file

__all__ = ["COUNTERS_TABLE", "Database", "bump_counter"]

#: The named counters a store may keep (add to its schema).
COUNTERS_TABLE = """
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


def bump_counter(conn: sqlite3.Connection, name: str) -> int:
    """Count one more under ``name`` (in the caller's transaction); the new total."""
    conn.execute(
        "INSERT INTO counters (name, value) VALUES (?, 1)"
        " ON CONFLICT(name) DO UPDATE SET value = value + 1",
        (name,),
    )
    return int(conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])


class Database:
    """One SQLite file in WAL mode; every statement runs under one lock.

    Several processes of one organisation (``referral connector run`` and a
    one-off ``referral publish``) may share the file: WAL and a busy timeout
    let them take turns.

    Commits run with ``synchronous=NORMAL``: durable against a crash of the
    process, not yet against one of the machine (the WAL is not synced at each
    commit). Before acknowledging what it wrote — committing a Kafka offset,
    answering RECEIVED — a caller calls :meth:`sync` once for every commit so far.
    """

    def __init__(self, path: Path, schema: str) -> None:
        self.path = Path(path)
        try:
            private_file(self.path)
            self._conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open database {self.path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # A deleted row's bytes are overwritten, not left in a free page (erasure).
            self._conn.execute("PRAGMA secure_delete=ON")
            self._conn.executescript(schema)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: committed on success, rolled back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def sync(self) -> None:
        """Make every transaction committed so far durable: one fsync of the WAL.

        WAL frames of a committed transaction are what recovery replays; without a
        WAL file every commit is already in the database file, which SQLite syncs
        when it checkpoints.
        """
        wal = self.path.with_name(self.path.name + "-wal")
        with self._lock:
            try:
                fd = os.open(wal, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """All rows of one read statement."""
        with self._lock:
            return list(self._conn.execute(sql, params))

    def add_columns(self, table: str, columns: Mapping[str, str]) -> None:
        """Add the ``columns`` (name → declaration) an older file's ``table`` lacks.

        Safe when another process adds them at the same time: each is added in
        its own transaction after looking again, and a "duplicate column" loses.
        """
        for name, decl in columns.items():
            with self._lock:
                have = {r["name"] for r in self.query(f"PRAGMA table_info({table})")}
                if name in have:
                    continue
                try:
                    with self.transaction() as conn:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise

    def erase(
        self,
        statements: Sequence[tuple[str, tuple[object, ...]]],
        then: Sequence[tuple[str, tuple[object, ...]]] = (),
    ) -> int:
        """Run the DELETE ``statements`` (and ``then``) in one transaction, then empty the WAL;
        the rows the DELETEs removed.

        With ``secure_delete`` the deleted bytes are zeroed in the pages, and the
        checkpoint truncates the WAL that still held them.
        """
        with self._lock:
            with self.transaction() as conn:
                gone = sum(conn.execute(sql, params).rowcount for sql, params in statements)
                for sql, params in then:
                    conn.execute(sql, params)
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return gone

    def counter(self, name: str) -> int:
        """The value of a counter of :data:`COUNTERS_TABLE` (0 if never counted)."""
        rows = self.query("SELECT value FROM counters WHERE name = ?", (name,))
        return int(rows[0]["value"]) if rows else 0

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
