"""The origin's outbox: every published referral, until each destination has it.

The embedded broker keeps nothing across a restart, so the guarantee that no
referral is lost lives here. Each referral is stored (its exact bytes and
headers) with the organisations expected to receive it — the routing
decision's ``orgs`` at publish time. A RECEIVED status from one of them clears
that organisation; when all are cleared the referral is complete. Anything
still pending after ``republish_after`` seconds is sent again, same referral
id, same bytes (sinks are idempotent, so a repeat is harmless).

Entries are never removed, so the outbox also knows every referral the origin
ever published, with the fingerprint of its content: the publisher asks it to
tell a repeat (same id, same content: not sent again) from an amendment (same
id, other content: refused for now). The file is private (``0600``).

File: ``<state_dir>/orgs/<org>/outbox.sqlite3``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.sqlite import Database

__all__ = ["Outbox", "OutboxEntry", "PendingReferral"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS referrals (
    referral_id  TEXT PRIMARY KEY,
    case_id      TEXT NOT NULL,
    topic        TEXT NOT NULL,
    value        BLOB NOT NULL,
    headers      TEXT NOT NULL,
    published_at REAL NOT NULL,
    last_sent_at REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 1,
    completed_at REAL,
    content_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS expected (
    referral_id TEXT NOT NULL REFERENCES referrals(referral_id),
    org_id      TEXT NOT NULL,
    received_at REAL,
    PRIMARY KEY (referral_id, org_id)
);
CREATE INDEX IF NOT EXISTS referrals_pending ON referrals(completed_at, last_sent_at);
"""

HeaderList = list[tuple[str, bytes]]


def _dump_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    return json.dumps([[k, v.decode("latin-1")] for k, v in headers])


def _load_headers(text: str) -> HeaderList:
    return [(str(k), str(v).encode("latin-1")) for k, v in json.loads(text)]


@dataclass(frozen=True)
class OutboxEntry:
    """A stored referral: enough to publish it again byte for byte."""

    referral_id: str
    case_id: str
    topic: str
    value: bytes
    headers: HeaderList
    published_at: float
    last_sent_at: float
    attempts: int
    #: Fingerprint of the referral's content (None for entries stored before it was kept).
    content_sha256: str | None = None


@dataclass(frozen=True)
class PendingReferral:
    """A referral some destination has not confirmed yet."""

    referral_id: str
    case_id: str
    waiting_for: tuple[str, ...]
    received_by: tuple[str, ...]
    published_at: float
    last_sent_at: float
    attempts: int

    def age(self, now: float | None = None) -> float:
        """Seconds since the first publication."""
        return (now if now is not None else time.time()) - self.published_at

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """JSON-ready summary (ids, organisations, times; never payload)."""
        return {
            "referral_id": self.referral_id,
            "case_id": self.case_id,
            "waiting_for": list(self.waiting_for),
            "received_by": list(self.received_by),
            "published_at": self.published_at,
            "last_sent_at": self.last_sent_at,
            "attempts": self.attempts,
            "age_seconds": round(self.age(now), 3),
        }


class Outbox:
    """The outbox of one origin organisation (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = Database(self.path, _SCHEMA)
        self._add_column("content_sha256", "TEXT")

    def _add_column(self, name: str, kind: str) -> None:
        """Add a column an older outbox file does not have yet."""
        if any(row["name"] == name for row in self._db.query("PRAGMA table_info(referrals)")):
            return
        try:
            with self._db.transaction() as conn:
                conn.execute(f"ALTER TABLE referrals ADD COLUMN {name} {kind}")
        except sqlite3.OperationalError:  # another process added it meanwhile
            pass

    @classmethod
    def for_org(cls, settings: Settings, org_id: str) -> Outbox:
        """The outbox at ``<state_dir>/orgs/<org>/outbox.sqlite3``."""
        return cls(settings.org_dir(org_id) / "outbox.sqlite3")

    def add(
        self,
        referral_id: str,
        case_id: str,
        topic: str,
        value: bytes,
        headers: Sequence[tuple[str, bytes]],
        expected: Iterable[str],
        now: float | None = None,
        *,
        content_sha256: str | None = None,
    ) -> bool:
        """Store a referral before its first publication; False if already stored."""
        now = time.time() if now is None else now
        orgs = list(dict.fromkeys(expected))
        with self._db.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO referrals (referral_id, case_id, topic, value, headers,"
                " published_at, last_sent_at, attempts, completed_at, content_sha256)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                (
                    referral_id,
                    case_id,
                    topic,
                    value,
                    _dump_headers(headers),
                    now,
                    now,
                    None if orgs else now,
                    content_sha256,
                ),
            )
            if cur.rowcount == 0:
                return False
            conn.executemany(
                "INSERT OR IGNORE INTO expected (referral_id, org_id) VALUES (?, ?)",
                [(referral_id, org) for org in orgs],
            )
        return True

    def get(self, referral_id: str) -> OutboxEntry | None:
        """The stored referral, or None."""
        rows = self._db.query("SELECT * FROM referrals WHERE referral_id = ?", (referral_id,))
        return self._entry(rows[0]) if rows else None

    @staticmethod
    def _entry(row: Any) -> OutboxEntry:
        return OutboxEntry(
            referral_id=row["referral_id"],
            case_id=row["case_id"],
            topic=row["topic"],
            value=bytes(row["value"]),
            headers=_load_headers(row["headers"]),
            published_at=row["published_at"],
            last_sent_at=row["last_sent_at"],
            attempts=row["attempts"],
            content_sha256=row["content_sha256"],
        )

    def mark_received(self, referral_id: str, org_id: str, now: float | None = None) -> bool:
        """Record ``org_id``'s RECEIVED; True if it cleared a pending destination.

        A RECEIVED from an organisation that was not expected (or a repeat) changes
        nothing. When the last destination clears, the referral is complete.
        """
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE expected SET received_at = ?"
                " WHERE referral_id = ? AND org_id = ? AND received_at IS NULL",
                (now, referral_id, org_id),
            )
            if cur.rowcount == 0:
                return False
            left = conn.execute(
                "SELECT COUNT(*) FROM expected WHERE referral_id = ? AND received_at IS NULL",
                (referral_id,),
            ).fetchone()[0]
            if left == 0:
                conn.execute(
                    "UPDATE referrals SET completed_at = ? WHERE referral_id = ?",
                    (now, referral_id),
                )
        return True

    def due(self, republish_after: float, now: float | None = None) -> list[OutboxEntry]:
        """Pending referrals last sent at least ``republish_after`` seconds ago."""
        now = time.time() if now is None else now
        rows = self._db.query(
            "SELECT * FROM referrals WHERE completed_at IS NULL AND last_sent_at <= ?"
            " ORDER BY last_sent_at",
            (now - republish_after,),
        )
        return [self._entry(r) for r in rows]

    def mark_sent(self, referral_id: str, now: float | None = None) -> None:
        """Record another publication of a stored referral."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE referrals SET last_sent_at = ?, attempts = attempts + 1"
                " WHERE referral_id = ?",
                (now, referral_id),
            )

    def pending(self) -> list[PendingReferral]:
        """Every referral still waiting for at least one destination, oldest first."""
        rows = self._db.query(
            "SELECT r.referral_id, r.case_id, r.published_at, r.last_sent_at, r.attempts,"
            " e.org_id, e.received_at FROM referrals r JOIN expected e USING (referral_id)"
            " WHERE r.completed_at IS NULL ORDER BY r.published_at, r.referral_id, e.org_id"
        )
        grouped: dict[str, list[Any]] = {}
        for row in rows:
            grouped.setdefault(row["referral_id"], []).append(row)
        out = []
        for referral_id, group in grouped.items():
            first = group[0]
            out.append(
                PendingReferral(
                    referral_id=referral_id,
                    case_id=first["case_id"],
                    waiting_for=tuple(r["org_id"] for r in group if r["received_at"] is None),
                    received_by=tuple(r["org_id"] for r in group if r["received_at"] is not None),
                    published_at=first["published_at"],
                    last_sent_at=first["last_sent_at"],
                    attempts=first["attempts"],
                )
            )
        return out

    def is_complete(self, referral_id: str) -> bool:
        """True once every expected destination has confirmed receipt."""
        rows = self._db.query(
            "SELECT completed_at FROM referrals WHERE referral_id = ?", (referral_id,)
        )
        return bool(rows) and rows[0]["completed_at"] is not None

    def count(self) -> int:
        """How many referrals the outbox holds (complete or not)."""
        return int(self._db.query("SELECT COUNT(*) AS n FROM referrals")[0]["n"])

    def close(self) -> None:
        """Close the database."""
        self._db.close()
