"""The origin's outbox: every published referral, until each destination has answered.

The rules it follows: broker/origin/README.md, section `outbox`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.lifecycle import reason_code
from broker.outcomes import ItemRef, Reroute
from broker.sqlite import Database
from broker.wire.topics import HeaderList

__all__ = [
    "DestinationRefusal",
    "Outbox",
    "OutboxEntry",
    "PendingReferral",
    "ReferralFacts",
    "RepublishSchedule",
    "StoredVersion",
]

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
CREATE TABLE IF NOT EXISTS refused (
    referral_id TEXT NOT NULL REFERENCES referrals(referral_id),
    org_id      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    refused_at  REAL NOT NULL,
    PRIMARY KEY (referral_id, org_id)
);
CREATE INDEX IF NOT EXISTS referrals_pending ON referrals(completed_at, last_sent_at);
CREATE TABLE IF NOT EXISTS versions (
    referral_id    TEXT NOT NULL REFERENCES referrals(referral_id),
    version        INTEGER NOT NULL,
    value          BLOB NOT NULL,
    content_sha256 TEXT,
    published_at   REAL NOT NULL,
    superseded_at  REAL NOT NULL,
    PRIMARY KEY (referral_id, version)
);
CREATE TABLE IF NOT EXISTS reroutes (
    child_referral_id  TEXT PRIMARY KEY,
    parent_referral_id TEXT NOT NULL REFERENCES referrals(referral_id),
    item_id            TEXT NOT NULL,
    country            TEXT NOT NULL,
    ip                 TEXT,
    requested_at       REAL NOT NULL,
    published_at       REAL,
    problem            TEXT
);
"""

#: Columns later versions added to ``referrals`` (added to an older file on open).
_ADDED_COLUMNS = {
    "content_sha256": "TEXT",
    "version": "INTEGER NOT NULL DEFAULT 1",
    "parent_referral_id": "TEXT",
    "items": "TEXT NOT NULL DEFAULT '[]'",
    "countries": "TEXT NOT NULL DEFAULT '[]'",
    "document": "TEXT",
}

#: Destinations still waiting: neither received nor refused (``e`` is ``expected``).
_WAITING = (
    "e.received_at IS NULL AND NOT EXISTS (SELECT 1 FROM refused f"
    " WHERE f.referral_id = e.referral_id AND f.org_id = e.org_id)"
)


@dataclass(frozen=True)
class RepublishSchedule:
    """When a referral nobody has answered is sent again, and how many go out per sweep.

    After its n-th send a referral waits ``republish_after × 2^(n-1)`` seconds,
    capped at ``backoff_max`` (never below ``republish_after``): with the
    defaults it is sent at 0, +5 min, +15 min, +35 min, +75 min, then hourly.
    """

    republish_after: float = 300.0
    backoff_max: float = 3600.0
    max_per_sweep: int = 500

    def __post_init__(self) -> None:
        if self.republish_after <= 0 or self.max_per_sweep < 1:
            raise ValueError("republish_after must be > 0 and max_per_sweep >= 1")

    @property
    def cap(self) -> float:
        """The longest wait between two sends."""
        return max(self.backoff_max, self.republish_after)

    @property
    def doublings(self) -> int:
        """How many doublings reach the cap (further ones are cut off)."""
        return max(0, math.ceil(math.log2(self.cap / self.republish_after)))

    def interval(self, sends: int) -> float:
        """Seconds to wait after a referral's ``sends``-th send before the next one."""
        exponent = min(max(sends, 1) - 1, self.doublings)
        return min(math.ldexp(self.republish_after, exponent), self.cap)

    def next_send_at(self, last_sent_at: float, sends: int) -> float:
        """When a referral sent ``sends`` times, last at ``last_sent_at``, is due again."""
        return last_sent_at + self.interval(sends)


@dataclass(frozen=True)
class StoredVersion:
    """What the publisher needs to tell new, repeat and amendment apart."""

    version: int
    #: Fingerprint of the current version's content (None for entries stored before it was kept).
    content_sha256: str | None


@dataclass(frozen=True)
class ReferralFacts:
    """What the outbox keeps about a referral beside its bytes (for outcomes and re-referrals)."""

    version: int = 1
    parent_referral_id: str | None = None
    items: tuple[ItemRef, ...] = ()
    countries: tuple[str, ...] = ()
    #: The plain referral as JSON (never for a sealed one the origin could not re-read).
    document: dict[str, Any] | None = None

    def columns(self) -> tuple[str, str, str | None]:
        """The ``items``, ``countries`` and ``document`` column values."""
        return (
            json.dumps([{"item_id": i.item_id, "country": i.country} for i in self.items]),
            json.dumps(list(self.countries)),
            json.dumps(self.document, sort_keys=True) if self.document is not None else None,
        )


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
    #: The current version (1 until the origin amends it).
    version: int = 1
    #: The referral a re-referral came from.
    parent_referral_id: str | None = None
    #: The items as referred: id and hosting country.
    items: tuple[ItemRef, ...] = ()
    #: The countries the referral was routed for.
    countries: tuple[str, ...] = ()
    #: The plain referral (JSON) the origin keeps to re-refer a moved item; None if not kept.
    document: dict[str, Any] | None = None


@dataclass(frozen=True)
class DestinationRefusal:
    """A destination that refused a referral for good, and its reason code."""

    org_id: str
    reason: str
    refused_at: float


@dataclass(frozen=True)
class PendingReferral:
    """A referral with a destination that has not received it: waiting, or refused."""

    referral_id: str
    case_id: str
    waiting_for: tuple[str, ...]
    received_by: tuple[str, ...]
    published_at: float
    last_sent_at: float
    #: How many times it was sent (the first publication included).
    attempts: int
    refused_by: tuple[DestinationRefusal, ...] = ()
    #: The current version (1 until amended).
    version: int = 1
    parent_referral_id: str | None = None
    #: True once no destination is waiting any more.
    complete: bool = False

    @property
    def state(self) -> str:
        """``pending`` while a destination is waiting, ``refused`` if one refused, else ``done``."""
        if self.waiting_for:
            return "pending"
        return "refused" if self.refused_by else "done"

    def age(self, now: float | None = None) -> float:
        """Seconds since the first publication."""
        return (now if now is not None else time.time()) - self.published_at

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """JSON-ready summary (ids, organisations, times; never payload)."""
        return {
            "referral_id": self.referral_id,
            "case_id": self.case_id,
            "state": self.state,
            "waiting_for": list(self.waiting_for),
            "received_by": list(self.received_by),
            "refused_by": [{"org_id": r.org_id, "reason": r.reason} for r in self.refused_by],
            "published_at": self.published_at,
            "last_sent_at": self.last_sent_at,
            "attempts": self.attempts,
            "version": self.version,
            "parent_referral_id": self.parent_referral_id,
            "age_seconds": round(self.age(now), 3),
        }


class Outbox:
    """The outbox of one origin organisation (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = Database(self.path, _SCHEMA)
        self._db.add_columns("referrals", _ADDED_COLUMNS)

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
        about: ReferralFacts | None = None,
    ) -> bool:
        """Store a referral before its first publication; False if already stored."""
        now = time.time() if now is None else now
        orgs = list(dict.fromkeys(expected))
        facts = about or ReferralFacts()
        with self._db.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO referrals (referral_id, case_id, topic, value, headers,"
                " published_at, last_sent_at, attempts, completed_at, content_sha256,"
                " version, parent_referral_id, items, countries, document)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
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
                    facts.version,
                    facts.parent_referral_id,
                    *facts.columns(),
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

    def stored(self, referral_id: str) -> StoredVersion | None:
        """The current version and content fingerprint of a stored referral (a light query)."""
        rows = self._db.query(
            "SELECT version, content_sha256 FROM referrals WHERE referral_id = ?", (referral_id,)
        )
        if not rows:
            return None
        return StoredVersion(int(rows[0]["version"] or 1), rows[0]["content_sha256"])

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
            version=int(row["version"] or 1),
            parent_referral_id=row["parent_referral_id"],
            items=tuple(
                ItemRef(str(i["item_id"]), i.get("country")) for i in json.loads(row["items"])
            ),
            countries=tuple(json.loads(row["countries"])),
            document=json.loads(row["document"]) if row["document"] else None,
        )

    def amend(
        self,
        referral_id: str,
        value: bytes,
        headers: Sequence[tuple[str, bytes]],
        expected: Iterable[str],
        content_sha256: str | None,
        about: ReferralFacts,
        now: float | None = None,
    ) -> bool:
        """Make ``about.version`` the current version of a stored referral; False if not newer.

        The version it replaces goes to the history (``versions``); every
        destination waits again (for a RECEIVED of the new version) and earlier
        refusals are forgotten: the new version is sent as if first published.
        """
        now = time.time() if now is None else now
        orgs = list(dict.fromkeys(expected))
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT version, value, content_sha256, last_sent_at FROM referrals"
                " WHERE referral_id = ?",
                (referral_id,),
            ).fetchone()
            if row is None or int(row["version"] or 1) >= about.version:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO versions (referral_id, version, value, content_sha256,"
                " published_at, superseded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    referral_id,
                    int(row["version"] or 1),
                    row["value"],
                    row["content_sha256"],
                    row["last_sent_at"],
                    now,
                ),
            )
            conn.execute(
                "UPDATE referrals SET value = ?, headers = ?, content_sha256 = ?, version = ?,"
                " items = ?, countries = ?, document = ?, last_sent_at = ?, attempts = 1,"
                " completed_at = ? WHERE referral_id = ?",
                (
                    value,
                    _dump_headers(headers),
                    content_sha256,
                    about.version,
                    *about.columns(),
                    now,
                    None if orgs else now,
                    referral_id,
                ),
            )
            conn.execute("DELETE FROM expected WHERE referral_id = ?", (referral_id,))
            conn.execute("DELETE FROM refused WHERE referral_id = ?", (referral_id,))
            conn.executemany(
                "INSERT INTO expected (referral_id, org_id) VALUES (?, ?)",
                [(referral_id, org) for org in orgs],
            )
        return True

    def earlier_values(self, referral_id: str) -> list[bytes]:
        """The framed bytes of every version before the current one, oldest first."""
        rows = self._db.query(
            "SELECT value FROM versions WHERE referral_id = ? ORDER BY version", (referral_id,)
        )
        return [bytes(r["value"]) for r in rows]

    def versions(self, referral_id: str) -> list[int]:
        """Every version of a referral the origin published, oldest first."""
        rows = self._db.query(
            "SELECT version FROM versions WHERE referral_id = ? UNION"
            " SELECT version FROM referrals WHERE referral_id = ? ORDER BY version",
            (referral_id, referral_id),
        )
        return [int(r["version"]) for r in rows]

    # -- re-referrals of moved items -------------------------------------------------------------

    def request_reroute(self, reroute: Reroute, now: float | None = None) -> bool:
        """Queue the re-referral of a moved item; False if it was queued before."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO reroutes (child_referral_id, parent_referral_id, item_id,"
                " country, ip, requested_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    reroute.child_referral_id,
                    reroute.parent_referral_id,
                    reroute.item_id,
                    reroute.country,
                    reroute.ip,
                    now,
                ),
            )
            return cur.rowcount == 1

    def reroutes_due(self) -> list[Reroute]:
        """Queued re-referrals not published yet (nor given up), oldest first."""
        rows = self._db.query(
            "SELECT * FROM reroutes WHERE published_at IS NULL AND problem IS NULL"
            " ORDER BY requested_at, child_referral_id"
        )
        return [
            Reroute(
                r["parent_referral_id"], r["item_id"], r["country"], r["child_referral_id"], r["ip"]
            )
            for r in rows
        ]

    def finish_reroute(
        self, child_referral_id: str, problem: str | None = None, now: float | None = None
    ) -> None:
        """Record a re-referral as published, or as given up with a one-line ``problem``."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            if problem is None:
                conn.execute(
                    "UPDATE reroutes SET published_at = ? WHERE child_referral_id = ?",
                    (now, child_referral_id),
                )
            else:
                conn.execute(
                    "UPDATE reroutes SET problem = ? WHERE child_referral_id = ?",
                    (problem[:200], child_referral_id),
                )

    def children(self, referral_id: str) -> list[tuple[Reroute, bool]]:
        """The re-referrals of a referral's moved items, and whether each was published."""
        rows = self._db.query(
            "SELECT * FROM reroutes WHERE parent_referral_id = ? ORDER BY requested_at",
            (referral_id,),
        )
        return [
            (
                Reroute(
                    r["parent_referral_id"], r["item_id"], r["country"], r["child_referral_id"]
                ),
                r["published_at"] is not None,
            )
            for r in rows
        ]

    def mark_received(
        self, referral_id: str, org_id: str, now: float | None = None, *, version: int = 1
    ) -> bool:
        """Record ``org_id``'s RECEIVED of ``version``; True if it cleared a pending destination.

        A RECEIVED from an organisation that was not expected (or a repeat) changes
        nothing; neither does one of a version older than the current one (the
        amendment is still on its way). One from a destination that had refused
        counts (it was delivered after all). When no destination is left waiting,
        the referral is complete.
        """
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            current = conn.execute(
                "SELECT version FROM referrals WHERE referral_id = ?", (referral_id,)
            ).fetchone()
            if current is not None and version < int(current["version"] or 1):
                return False
            cur = conn.execute(
                "UPDATE expected SET received_at = ?"
                " WHERE referral_id = ? AND org_id = ? AND received_at IS NULL",
                (now, referral_id, org_id),
            )
            if cur.rowcount == 0:
                return False
            self._complete_if_answered(conn, referral_id, now)
        return True

    def mark_refused(
        self,
        referral_id: str,
        org_id: str,
        reason: str | None,
        now: float | None = None,
        *,
        version: int = 1,
    ) -> bool:
        """Record that ``org_id`` refused the referral for good; True if that changed anything.

        For a destination's signed REJECTED (its system refused the referral, e.g.
        an HTTP 4xx): the outbox stops sending the referral for that destination,
        and ``referral outbox`` shows it as refused with ``reason`` (a code such as
        ``HTTP_422``; anything but printable ASCII is replaced, at most 64
        characters). A refusal from an organisation that was not expected, that
        already received the referral, or a repeat, changes nothing; nor does the
        refusal of a version older than the current one (an amendment answered it).
        """
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            current = conn.execute(
                "SELECT version FROM referrals WHERE referral_id = ?", (referral_id,)
            ).fetchone()
            if current is not None and version < int(current["version"] or 1):
                return False
            open_row = conn.execute(
                "SELECT 1 FROM expected"
                " WHERE referral_id = ? AND org_id = ? AND received_at IS NULL",
                (referral_id, org_id),
            ).fetchone()
            if open_row is None:
                return False
            cur = conn.execute(
                "INSERT OR IGNORE INTO refused (referral_id, org_id, reason, refused_at)"
                " VALUES (?, ?, ?, ?)",
                (referral_id, org_id, reason_code(reason), now),
            )
            if cur.rowcount == 0:
                return False
            self._complete_if_answered(conn, referral_id, now)
        return True

    @staticmethod
    def _complete_if_answered(conn: Any, referral_id: str, now: float) -> None:
        """Mark the referral complete when no destination is left waiting."""
        left = conn.execute(
            f"SELECT COUNT(*) FROM expected e WHERE e.referral_id = ? AND {_WAITING}",
            (referral_id,),
        ).fetchone()[0]
        if left == 0:
            conn.execute(
                "UPDATE referrals SET completed_at = ?"
                " WHERE referral_id = ? AND completed_at IS NULL",
                (now, referral_id),
            )

    def due(
        self, schedule: RepublishSchedule | float, now: float | None = None
    ) -> list[OutboxEntry]:
        """Pending referrals due again under ``schedule``, longest overdue first.

        At most ``schedule.max_per_sweep`` of them. A bare number is a schedule
        with that ``republish_after`` and the default cap and budget.
        """
        if not isinstance(schedule, RepublishSchedule):
            schedule = RepublishSchedule(republish_after=float(schedule))
        now = time.time() if now is None else now
        # RepublishSchedule.next_send_at in SQL; the index narrows to those sent at
        # least republish_after ago (no interval is shorter).
        next_send_at = "last_sent_at + MIN(? * (1 << MIN(MAX(attempts, 1) - 1, ?)), ?)"
        rows = self._db.query(
            f"SELECT *, {next_send_at} AS next_send_at FROM referrals"
            " WHERE completed_at IS NULL AND last_sent_at <= ? AND next_send_at <= ?"
            " ORDER BY next_send_at, referral_id LIMIT ?",
            (
                schedule.republish_after,
                schedule.doublings,
                schedule.cap,
                now - schedule.republish_after,
                now,
                schedule.max_per_sweep,
            ),
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

    def all(self) -> list[PendingReferral]:
        """Every referral the origin published (complete or not), oldest first."""
        return self._summaries("1 = 1")

    def pending(self) -> list[PendingReferral]:
        """Every referral still waiting for at least one destination, oldest first."""
        return self._summaries("r.completed_at IS NULL")

    def refused(self) -> list[PendingReferral]:
        """Every referral no destination is waiting for any more but one refused, oldest first."""
        return self._summaries(
            "r.completed_at IS NOT NULL AND EXISTS (SELECT 1 FROM refused f"
            " JOIN expected x ON x.referral_id = f.referral_id AND x.org_id = f.org_id"
            " WHERE f.referral_id = r.referral_id AND x.received_at IS NULL)"
        )

    def _summaries(self, where: str) -> list[PendingReferral]:
        rows = self._db.query(
            "SELECT r.referral_id, r.case_id, r.published_at, r.last_sent_at, r.attempts,"
            " r.version, r.parent_referral_id, r.completed_at,"
            " e.org_id, e.received_at, f.reason, f.refused_at"
            " FROM referrals r JOIN expected e USING (referral_id)"
            " LEFT JOIN refused f ON f.referral_id = e.referral_id AND f.org_id = e.org_id"
            f" WHERE {where} ORDER BY r.published_at, r.referral_id, e.org_id"
        )
        grouped: dict[str, list[Any]] = {}
        for row in rows:
            grouped.setdefault(row["referral_id"], []).append(row)
        out = []
        for referral_id, group in grouped.items():
            first = group[0]
            open_ = [r for r in group if r["received_at"] is None]
            out.append(
                PendingReferral(
                    referral_id=referral_id,
                    case_id=first["case_id"],
                    waiting_for=tuple(r["org_id"] for r in open_ if r["reason"] is None),
                    received_by=tuple(r["org_id"] for r in group if r["received_at"] is not None),
                    published_at=first["published_at"],
                    last_sent_at=first["last_sent_at"],
                    attempts=first["attempts"],
                    version=int(first["version"] or 1),
                    parent_referral_id=first["parent_referral_id"],
                    complete=first["completed_at"] is not None,
                    refused_by=tuple(
                        DestinationRefusal(r["org_id"], r["reason"], r["refused_at"])
                        for r in open_
                        if r["reason"] is not None
                    ),
                )
            )
        return out

    def is_complete(self, referral_id: str) -> bool:
        """True once no destination is waiting: each received it or refused it for good."""
        rows = self._db.query(
            "SELECT completed_at FROM referrals WHERE referral_id = ?", (referral_id,)
        )
        return bool(rows) and rows[0]["completed_at"] is not None

    def waiting_by_destination(
        self, receipt_s: float, urgent_receipt_s: float, now: float | None = None
    ) -> dict[str, tuple[int, int]]:
        """Destination → (referrals it has not answered, those published longer ago than
        its receipt deadline: ``urgent_receipt_s`` for an URGENT one, else ``receipt_s``)."""
        now = time.time() if now is None else now
        rows = self._db.query(
            "SELECT e.org_id, COUNT(*) AS pending, SUM(r.published_at <= ? - CASE"
            " WHEN json_extract(r.document, '$.envelope.priority') = 'URGENT' THEN ? ELSE ?"
            " END) AS overdue FROM referrals r JOIN expected e USING (referral_id)"
            f" WHERE r.completed_at IS NULL AND {_WAITING} GROUP BY e.org_id",
            (now, urgent_receipt_s, receipt_s),
        )
        return {r["org_id"]: (int(r["pending"]), int(r["overdue"] or 0)) for r in rows}

    def waiting_for(self, referral_ids: Sequence[str]) -> list[str]:
        """The destinations still waiting, one per (referral, destination) of ``referral_ids``."""
        out: list[str] = []
        for referral_id in referral_ids:
            rows = self._db.query(
                f"SELECT e.org_id FROM expected e WHERE e.referral_id = ? AND {_WAITING}",
                (referral_id,),
            )
            out.extend(r["org_id"] for r in rows)
        return out

    def count(self) -> int:
        """How many referrals the outbox holds (complete or not)."""
        return int(self._db.query("SELECT COUNT(*) AS n FROM referrals")[0]["n"])

    def erase(self, referral_id: str) -> int:
        """Forget one referral the origin published: every version, its plain content, its
        expected answers, refusals and re-referrals; rows gone."""
        key = (referral_id,)
        return self._db.erase(
            [
                ("DELETE FROM reroutes WHERE parent_referral_id = ?", key),
                ("DELETE FROM versions WHERE referral_id = ?", key),
                ("DELETE FROM refused WHERE referral_id = ?", key),
                ("DELETE FROM expected WHERE referral_id = ?", key),
                ("DELETE FROM referrals WHERE referral_id = ?", key),
            ]
        )

    def close(self) -> None:
        """Close the database."""
        self._db.close()
