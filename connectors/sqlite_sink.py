"""SQLite case-table sink: one row per referral, upserted by (origin, referral id)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from pydantic import Field

from broker.config import Settings
from broker.contracts import Delivery, Sink, Withdrawal
from broker.errors import DeliveryError
from broker.sqlite import Database
from connectors.base import ConnectorConfig, resolve_path

__all__ = ["SqliteCaseConfig", "SqliteCaseSink", "sql_time"]

_COLUMNS = (
    "referral_id, case_id, origin_org, priority, tlp, jurisdictions, referral, topic,"
    " received_at, updated_at"
)
#: Copies an older table's rows, converting epoch-number times to text.
_COPY_TIMES = (
    "referral_id, case_id, origin_org, priority, tlp, jurisdictions, referral, topic,"
    " CASE WHEN typeof(received_at) IN ('real', 'integer')"
    " THEN datetime(received_at, 'unixepoch') ELSE received_at END,"
    " CASE WHEN typeof(updated_at) IN ('real', 'integer')"
    " THEN datetime(updated_at, 'unixepoch') ELSE updated_at END"
)


def sql_time(epoch: float) -> str:
    """``epoch`` as UTC text SQLite's date functions read, to the millisecond.

    ``2026-11-23 13:05:09.120``: ordered as text, and as the case system's clock
    would show when a referral arrived (a second's resolution hid which of two
    deliveries came first).
    """
    return datetime.fromtimestamp(epoch, UTC).isoformat(sep=" ", timespec="milliseconds")[:23]


class SqliteCaseConfig(ConnectorConfig):
    """Settings of the SQLite case table."""

    path: str = Field(min_length=1)
    table: str = Field(default="cases", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class SqliteCaseSink(Sink):
    """Upserts each referral into a case table."""

    kind = "sqlite"

    def __init__(self, config: SqliteCaseConfig, settings: Settings) -> None:
        self.config = config
        self.path = resolve_path(settings, config.path)
        self.table = config.table
        self._db: Database | None = None

    def _create(self, name: str) -> str:
        return f"""CREATE TABLE IF NOT EXISTS {name} (
                referral_id   TEXT NOT NULL,
                case_id       TEXT NOT NULL,
                origin_org    TEXT NOT NULL,
                priority      TEXT NOT NULL,
                tlp           TEXT NOT NULL,
                jurisdictions TEXT NOT NULL,
                referral      TEXT NOT NULL,
                topic         TEXT NOT NULL,
                received_at   TEXT NOT NULL,
                updated_at    TEXT NOT NULL,
                PRIMARY KEY (origin_org, referral_id)
            );"""

    def _create_versions(self) -> str:
        return f"""CREATE TABLE IF NOT EXISTS {self.table}_versions (
                origin_org  TEXT NOT NULL,
                referral_id TEXT NOT NULL,
                version     INTEGER NOT NULL,
                referral    TEXT NOT NULL,
                received_at TEXT NOT NULL,
                PRIMARY KEY (origin_org, referral_id, version)
            );"""

    def open(self) -> None:
        """Open the database and create the tables if missing (rebuilding an old one)."""
        self._db = Database(self.path, self._create(self.table) + self._create_versions())
        info = self._db.query(f"PRAGMA table_info({self.table})")
        keys = [r["name"] for r in sorted(info, key=lambda r: r["pk"]) if r["pk"]]
        types = {r["name"]: str(r["type"]).upper() for r in info}
        if keys == ["referral_id"] or types.get("received_at") != "TEXT":
            old = f"{self.table}_old"
            with self._db.transaction() as conn:
                conn.execute(f"ALTER TABLE {self.table} RENAME TO {old}")
                conn.execute(self._create(self.table))
                conn.execute(
                    f"INSERT INTO {self.table} ({_COLUMNS}) SELECT {_COPY_TIMES} FROM {old}"
                )
                conn.execute(f"DROP TABLE {old}")
        self._db.add_columns(
            self.table,
            {
                "version": "INTEGER NOT NULL DEFAULT 1",
                "withdrawn_version": "INTEGER",
                "withdrawn_at": "TEXT",
            },
        )

    def flush(self) -> None:
        """Make the rows written so far durable (one fsync, before they are acknowledged)."""
        if self._db is not None:
            self._db.sync()

    def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def erase(self, origin_org: str, referral_id: str) -> int:
        """Delete the referral's case row and every version kept of it."""
        opened = self._db is None
        if opened:
            self.open()
        assert self._db is not None
        key = (origin_org, referral_id)
        where = "WHERE origin_org = ? AND referral_id = ?"
        try:
            return self._db.erase(
                [
                    (f"DELETE FROM {self.table}_versions {where}", key),
                    (f"DELETE FROM {self.table} {where}", key),
                ]
            )
        finally:
            if opened:
                self.close()

    def deliver(self, delivery: Delivery) -> None:
        """Insert the referral's row, or update it if the referral id is already there."""
        assert self._db is not None, "open() first"
        env = delivery.document.get("envelope", {})
        now = sql_time(time.time())
        row = (
            delivery.referral_id,
            delivery.case_id,
            delivery.origin_org,
            str(env.get("priority", "")),
            str((env.get("handling") or {}).get("tlp", "")),
            json.dumps(env.get("jurisdictions", []), sort_keys=True),
            json.dumps(delivery.document, sort_keys=True),
            delivery.topic,
            now,
            now,
        )
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    f"INSERT INTO {self.table} (referral_id, case_id, origin_org, priority, tlp,"
                    " jurisdictions, referral, topic, received_at, updated_at, version)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(origin_org, referral_id) DO UPDATE SET"
                    " case_id = excluded.case_id, priority = excluded.priority,"
                    " tlp = excluded.tlp, jurisdictions = excluded.jurisdictions,"
                    " referral = excluded.referral, topic = excluded.topic,"
                    " updated_at = excluded.updated_at, version = excluded.version,"
                    f" withdrawn_version = CASE WHEN excluded.version > {self.table}.version"
                    f" THEN NULL ELSE {self.table}.withdrawn_version END,"
                    f" withdrawn_at = CASE WHEN excluded.version > {self.table}.version"
                    f" THEN NULL ELSE {self.table}.withdrawn_at END"
                    f" WHERE excluded.version >= {self.table}.version",
                    (*row, delivery.version),
                )
                conn.execute(
                    f"INSERT OR IGNORE INTO {self.table}_versions (origin_org, referral_id,"
                    " version, referral, received_at) VALUES (?, ?, ?, ?, ?)",
                    (delivery.origin_org, delivery.referral_id, delivery.version, row[6], now),
                )
        except Exception as exc:  # sqlite3.Error and OS errors alike
            raise DeliveryError(
                f"case table: cannot store referral {delivery.referral_id}: {type(exc).__name__}"
            ) from exc

    def withdraw(self, withdrawal: Withdrawal) -> None:
        """Mark the referral's row withdrawn (if the row is not of a newer version)."""
        assert self._db is not None, "open() first"
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    f"UPDATE {self.table} SET withdrawn_version = ?, withdrawn_at = ?,"
                    " updated_at = ? WHERE origin_org = ? AND referral_id = ? AND version <= ?",
                    (
                        withdrawal.version,
                        withdrawal.withdrawn_at,
                        sql_time(time.time()),
                        withdrawal.origin_org,
                        withdrawal.referral_id,
                        withdrawal.version,
                    ),
                )
        except Exception as exc:  # sqlite3.Error and OS errors alike
            raise DeliveryError(
                f"case table: cannot withdraw referral {withdrawal.referral_id}:"
                f" {type(exc).__name__}"
            ) from exc
