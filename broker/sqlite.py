"""A small, thread-safe SQLite wrapper: the outbox, inbox, case table, handling log and ledger.

Every database file is private (``0600`` in a ``0700`` directory, see
:mod:`broker.private`); SQLite gives its ``-wal`` and ``-shm`` files the same mode.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from broker.errors import ConfigError
from broker.private import private_file

__all__ = ["Database"]


class Database:
    """One SQLite file in WAL mode; every statement runs under one lock.

    Several processes of one organisation (``referral connector run`` and a
    one-off ``referral publish``) may share the file: WAL and a busy timeout
    let them take turns.
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

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """All rows of one read statement."""
        with self._lock:
            return list(self._conn.execute(sql, params))

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
