"""The receiving side's memory: what each sink has delivered, keyed by referral id.

A referral may arrive more than once — redelivered after a crash before the
offset commit, republished by its origin's outbox, or reaching an organisation
through two topics. The inbox makes delivery idempotent: a referral a sink has
delivered is never handed to it again; the repeat is counted
(``inbox.duplicates``) instead. The inbox also answers ``referral status``:
which origin and case a referral belongs to.

File: ``<state_dir>/orgs/<org>/inbox.sqlite3``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from broker.config import Settings
from broker.sqlite import Database
from connectors.base import Delivery

__all__ = ["DUPLICATES", "Inbox", "InboxRecord"]

#: Counter of redelivered referrals that were skipped.
DUPLICATES = "inbox.duplicates"
#: Counter of repeated status updates that were skipped.
STATUS_DUPLICATES = "inbox.status_duplicates"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (
    referral_id  TEXT NOT NULL,
    sink         TEXT NOT NULL,
    case_id      TEXT NOT NULL,
    origin_org   TEXT NOT NULL,
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    "offset"     INTEGER NOT NULL,
    delivered_at REAL NOT NULL,
    duplicates   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (referral_id, sink)
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS statuses (
    key         TEXT PRIMARY KEY,
    referral_id TEXT NOT NULL,
    at          REAL NOT NULL
);
"""


@dataclass(frozen=True)
class InboxRecord:
    """What the inbox knows about one delivered referral."""

    referral_id: str
    sink: str
    case_id: str
    origin_org: str
    topic: str
    delivered_at: float
    duplicates: int


class Inbox:
    """The inbox of one receiving organisation (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = Database(self.path, _SCHEMA)

    @classmethod
    def for_org(cls, settings: Settings, org_id: str) -> Inbox:
        """The inbox at ``<state_dir>/orgs/<org>/inbox.sqlite3``."""
        return cls(settings.org_dir(org_id) / "inbox.sqlite3")

    def has(self, referral_id: str, sink: str) -> bool:
        """True if ``sink`` has already delivered ``referral_id``."""
        rows = self._db.query(
            "SELECT 1 FROM delivered WHERE referral_id = ? AND sink = ?", (referral_id, sink)
        )
        return bool(rows)

    def record(self, delivery: Delivery, sink: str, now: float | None = None) -> bool:
        """Remember that ``sink`` delivered this referral; False if it already had."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO delivered (referral_id, sink, case_id, origin_org, topic,"
                ' partition, "offset", delivered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                (
                    delivery.referral_id,
                    sink,
                    delivery.case_id,
                    delivery.origin_org,
                    delivery.topic,
                    delivery.partition,
                    delivery.offset,
                    now,
                ),
            )
            return cur.rowcount == 1

    def count_duplicate(self, referral_id: str, sink: str) -> int:
        """Count one skipped repeat; returns the organisation's total."""
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE delivered SET duplicates = duplicates + 1"
                " WHERE referral_id = ? AND sink = ?",
                (referral_id, sink),
            )
            return self._bump(conn, DUPLICATES)

    @staticmethod
    def _bump(conn: sqlite3.Connection, name: str) -> int:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1)"
            " ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (name,),
        )
        return int(conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])

    def counter(self, name: str) -> int:
        """The value of a counter (0 if never counted)."""
        rows = self._db.query("SELECT value FROM counters WHERE name = ?", (name,))
        return int(rows[0]["value"]) if rows else 0

    @property
    def duplicates(self) -> int:
        """How many redelivered referrals were skipped so far."""
        return self.counter(DUPLICATES)

    def lookup(self, referral_id: str) -> InboxRecord | None:
        """The first delivery of ``referral_id`` by any sink, or None."""
        rows = self._db.query(
            "SELECT * FROM delivered WHERE referral_id = ? ORDER BY delivered_at LIMIT 1",
            (referral_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return InboxRecord(
            referral_id=r["referral_id"],
            sink=r["sink"],
            case_id=r["case_id"],
            origin_org=r["origin_org"],
            topic=r["topic"],
            delivered_at=r["delivered_at"],
            duplicates=r["duplicates"],
        )

    def delivered(self, sink: str | None = None) -> list[str]:
        """Referral ids delivered (by ``sink``, or by any), in delivery order."""
        if sink is None:
            rows = self._db.query(
                "SELECT referral_id FROM delivered GROUP BY referral_id ORDER BY MIN(delivered_at)"
            )
        else:
            rows = self._db.query(
                "SELECT referral_id FROM delivered WHERE sink = ? ORDER BY delivered_at", (sink,)
            )
        return [r["referral_id"] for r in rows]

    # -- status updates (the origin side) -------------------------------------------------------

    def has_status(self, key: str) -> bool:
        """True if a status update with this identity was already handed on."""
        return bool(self._db.query("SELECT 1 FROM statuses WHERE key = ?", (key,)))

    def record_status(self, key: str, referral_id: str, now: float | None = None) -> None:
        """Remember a handed-on status update."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO statuses (key, referral_id, at) VALUES (?, ?, ?)",
                (key, referral_id, now),
            )

    def count_status_duplicate(self) -> int:
        """Count one skipped repeated status update; returns the total."""
        with self._db.transaction() as conn:
            return self._bump(conn, STATUS_DUPLICATES)

    def close(self) -> None:
        """Close the database."""
        self._db.close()
