"""The receiving side's memory: what each sink has delivered, keyed by (origin, referral id).

A referral may arrive more than once — redelivered after a crash before the
offset commit, republished by its origin's outbox, or reaching an organisation
through two topics. The inbox makes delivery idempotent: a referral a sink has
delivered is never handed to it again; the repeat is counted
(``inbox.duplicates``) instead. A referral's identity is its origin *and* its
id: another member that publishes a referral under an id some origin will use
later cannot make the real one be skipped as a repeat.

The inbox also answers ``referral status`` (which origin and case a referral
belongs to, and which statuses this organisation has sent about it: the
lifecycle in :mod:`broker.lifecycle` decides what may follow). It remembers
the referrals a sink's system refused for good (:meth:`Inbox.refusal`: a
republish is answered with the same REJECTED, never delivered or dead-lettered
again) and the transient failures still open (:meth:`Inbox.record_failure`: a
later delivery resolves them). Each delivery remembers the referral's version and
item ids: a newer version signed by the same origin is an amendment (delivered
again), the same or an older one a repeat; ``referral status --item`` resolves
item id prefixes against the current version's items. On the origin's side,
remembers the status updates handed on, each recipient's current lifecycle
state and the latest verified outcome of each item (:meth:`Inbox.record_outcomes`).

File: ``<state_dir>/orgs/<org>/inbox.sqlite3``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.sqlite import Database
from broker.wire.models import HostingEvidence, ItemOutcome, ItemOutcomeKind
from connectors.base import Delivery

__all__ = [
    "DUPLICATES",
    "DeliveryState",
    "Inbox",
    "InboxRecord",
    "ItemState",
    "Received",
    "Refusal",
]

#: Counter of redelivered referrals that were skipped.
DUPLICATES = "inbox.duplicates"
#: Counter of repeated status updates that were skipped.
STATUS_DUPLICATES = "inbox.status_duplicates"
#: Counters of refused status updates, by dead-letter stage (this prefix + the stage).
REFUSED_STATUSES = "inbox.refused_statuses."

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    origin_org   TEXT NOT NULL,
    referral_id  TEXT NOT NULL,
    sink         TEXT NOT NULL,
    case_id      TEXT NOT NULL,
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    "offset"     INTEGER NOT NULL,
    delivered_at REAL NOT NULL,
    duplicates   INTEGER NOT NULL DEFAULT 0,
    priority     TEXT NOT NULL DEFAULT '',
    external_refs TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (origin_org, referral_id, sink)
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
CREATE TABLE IF NOT EXISTS status_state (
    referral_id TEXT NOT NULL,
    emitter     TEXT NOT NULL,
    state       TEXT NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (referral_id, emitter)
);
CREATE TABLE IF NOT EXISTS refusals (
    origin_org  TEXT NOT NULL,
    referral_id TEXT NOT NULL,
    case_id     TEXT NOT NULL,
    sink        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    emitted_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (origin_org, referral_id)
);
CREATE TABLE IF NOT EXISTS failures (
    origin_org  TEXT NOT NULL,
    referral_id TEXT NOT NULL,
    sink        TEXT NOT NULL,
    failures    INTEGER NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (origin_org, referral_id, sink)
);
CREATE TABLE IF NOT EXISTS refused_statuses (
    position TEXT PRIMARY KEY,
    stage    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS item_outcomes (
    referral_id    TEXT NOT NULL,
    item_id        TEXT NOT NULL,
    emitter        TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    observed_at    TEXT NOT NULL,
    hosting_ip     TEXT,
    hosting_country TEXT,
    assessed_under TEXT,
    emitted_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (referral_id, item_id, emitter)
);
CREATE TABLE IF NOT EXISTS sent_statuses (
    origin_org  TEXT NOT NULL,
    referral_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    at          REAL NOT NULL
);
"""

#: Columns later versions added to ``deliveries`` (added to an older file on open).
_ADDED_COLUMNS = {
    "priority": "TEXT NOT NULL DEFAULT ''",
    "external_refs": "TEXT NOT NULL DEFAULT '[]'",
    "version": "INTEGER NOT NULL DEFAULT 1",
    "items": "TEXT NOT NULL DEFAULT '[]'",
}

#: The item outcomes later versions added to ``sent_statuses`` (JSON list of ItemOutcome).
_SENT_OUTCOMES_COLUMN = {"outcomes": "TEXT NOT NULL DEFAULT '[]'"}

#: The version column later versions added to ``refusals`` and ``status_state``.
_VERSION_COLUMN = {"version": "INTEGER NOT NULL DEFAULT 1"}

#: Earlier inbox files keyed deliveries by referral id alone: copied over once on open.
_MIGRATE = """
INSERT OR IGNORE INTO deliveries (origin_org, referral_id, sink, case_id, topic, partition,
    "offset", delivered_at, duplicates)
SELECT origin_org, referral_id, sink, case_id, topic, partition, "offset", delivered_at, duplicates
FROM delivered;
DROP TABLE delivered;
"""


@dataclass(frozen=True)
class Received:
    """One referral as the receiving organisation's inbox lists it (every sink together)."""

    referral_id: str
    origin_org: str
    case_id: str
    topic: str
    priority: str
    #: ``SYSTEM:id`` strings.
    external_refs: tuple[str, ...]
    #: When the first sink delivered it (epoch seconds).
    delivered_at: float
    sinks: tuple[str, ...]
    duplicates: int
    #: Statuses this organisation sent about it, in order.
    sent: tuple[str, ...]
    #: The current version delivered (above 1: amended by its origin).
    version: int = 1


def _refs_of(document: dict[str, Any]) -> str:
    refs = (document.get("envelope") or {}).get("external_refs") or []
    return json.dumps(
        [f"{r.get('system', '')}:{r.get('id', '')}" for r in refs if isinstance(r, dict)]
    )


def _items_of(document: dict[str, Any]) -> str:
    items = (document.get("body") or {}).get("items") or []
    return json.dumps(
        [str(i["item_id"]) for i in items if isinstance(i, dict) and i.get("item_id")]
    )


@dataclass(frozen=True)
class ItemState:
    """The latest verified outcome of one item of one of the origin's referrals, per emitter."""

    referral_id: str
    item_id: str
    emitter: str
    outcome: ItemOutcome


@dataclass(frozen=True)
class InboxRecord:
    """What the inbox knows about one delivered referral.

    ``topic``, ``partition`` and ``offset`` are where the current ``version`` was
    delivered from (an amendment moves them to the newer record); ``delivered_at``
    is when the first version arrived.
    """

    referral_id: str
    sink: str
    case_id: str
    origin_org: str
    topic: str
    delivered_at: float
    duplicates: int
    partition: int = 0
    offset: int = 0
    version: int = 1


@dataclass(frozen=True)
class Refusal:
    """A referral this organisation's system refused for good, and the REJECTED it answered."""

    origin_org: str
    referral_id: str
    case_id: str
    sink: str
    reason: str
    #: When the REJECTED was emitted (ms); a repeat answers with the very same update.
    emitted_at_ms: int
    #: The version refused; a newer one (the origin's amendment) is delivered again.
    version: int = 1


@dataclass(frozen=True)
class DeliveryState:
    """What the inbox knows of one referral before a delivery, read in one statement."""

    #: Sink kind → the version it delivered last.
    versions: dict[str, int]
    #: The refusal of the referral, if its system refused it for good.
    refusal: Refusal | None
    #: Sink kind → its transient failures still open.
    failures: dict[str, int]


#: A referral's deliveries, refusal and open failures: one look-up before each delivery.
_STATE = (
    "SELECT 'd', sink, version, NULL, NULL, NULL FROM deliveries"
    " WHERE origin_org = ?1 AND referral_id = ?2"
    " UNION ALL SELECT 'f', sink, failures, NULL, NULL, NULL FROM failures"
    " WHERE origin_org = ?1 AND referral_id = ?2"
    " UNION ALL SELECT 'r', sink, version, case_id, reason, emitted_at FROM refusals"
    " WHERE origin_org = ?1 AND referral_id = ?2"
)

_RECORD = (
    "INSERT INTO deliveries (origin_org, referral_id, sink, case_id, topic,"
    ' partition, "offset", delivered_at, priority, external_refs, version, items)'
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(origin_org, referral_id, sink) DO UPDATE SET"
    " version = excluded.version, items = excluded.items, topic = excluded.topic,"
    ' partition = excluded.partition, "offset" = excluded."offset",'
    " priority = excluded.priority, external_refs = excluded.external_refs"
    " WHERE excluded.version > deliveries.version"
)


class Inbox:
    """The inbox of one receiving organisation (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = Database(self.path, _SCHEMA)
        old = self._db.query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'delivered'"
        )
        if old:
            with self._db.transaction() as conn:
                for statement in _MIGRATE.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        for table, added in (
            ("deliveries", _ADDED_COLUMNS),
            ("refusals", _VERSION_COLUMN),
            ("status_state", _VERSION_COLUMN),
            ("sent_statuses", _SENT_OUTCOMES_COLUMN),
        ):
            have = {r["name"] for r in self._db.query(f"PRAGMA table_info({table})")}
            missing = [(n, d) for n, d in added.items() if n not in have]
            if missing:
                with self._db.transaction() as conn:
                    for name, decl in missing:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")

    @classmethod
    def for_org(cls, settings: Settings, org_id: str) -> Inbox:
        """The inbox at ``<state_dir>/orgs/<org>/inbox.sqlite3``."""
        return cls(settings.org_dir(org_id) / "inbox.sqlite3")

    def has(self, origin_org: str, referral_id: str, sink: str) -> bool:
        """True if ``sink`` has already delivered ``origin_org``'s referral ``referral_id``."""
        rows = self._db.query(
            "SELECT 1 FROM deliveries WHERE origin_org = ? AND referral_id = ? AND sink = ?",
            (origin_org, referral_id, sink),
        )
        return bool(rows)

    def version(self, origin_org: str, referral_id: str, sink: str) -> int | None:
        """The version of the referral ``sink`` delivered last (None: not delivered)."""
        rows = self._db.query(
            "SELECT version FROM deliveries WHERE origin_org = ? AND referral_id = ? AND sink = ?",
            (origin_org, referral_id, sink),
        )
        return int(rows[0]["version"]) if rows else None

    def item_ids(self, origin_org: str, referral_id: str) -> list[str]:
        """The item ids of the current version of a referral delivered here."""
        rows = self._db.query(
            "SELECT items FROM deliveries WHERE origin_org = ? AND referral_id = ?"
            " ORDER BY version DESC LIMIT 1",
            (origin_org, referral_id),
        )
        return [str(i) for i in json.loads(rows[0]["items"])] if rows else []

    def state(self, origin_org: str, referral_id: str) -> DeliveryState:
        """Which version each sink delivered, the refusal and the open failures of a referral.

        One statement: what the sink driver asks before each delivery.
        """
        versions: dict[str, int] = {}
        failures: dict[str, int] = {}
        refusal = None
        for kind, sink, n, case_id, reason, at in self._db.query(_STATE, (origin_org, referral_id)):
            if kind == "d":
                versions[str(sink)] = int(n or 1)
            elif kind == "f":
                failures[str(sink)] = int(n)
            else:
                refusal = Refusal(
                    origin_org,
                    referral_id,
                    str(case_id),
                    str(sink),
                    str(reason),
                    int(at),
                    int(n or 1),
                )
        return DeliveryState(versions, refusal, failures)

    def record(
        self,
        delivery: Delivery,
        sink: str,
        now: float | None = None,
        *,
        resolve_failures: bool = False,
    ) -> bool:
        """Remember that ``sink`` delivered this referral (this version); False if it already had.

        A newer version (an amendment) replaces what is remembered of an older one;
        an older or the same version changes nothing. With ``resolve_failures``, the
        sink's open failures of the referral are forgotten in the same transaction.
        """
        return self.record_many([(delivery, sink, resolve_failures)], now)[0]

    def record_many(
        self, deliveries: Sequence[tuple[Delivery, str, bool]], now: float | None = None
    ) -> list[bool]:
        """:meth:`record` for ``(delivery, sink, resolve_failures)`` each, in one transaction.

        The sink driver records a consumed batch this way once its sinks are durable.
        """
        now = time.time() if now is None else now
        out = []
        with self._db.transaction() as conn:
            for delivery, sink, resolve_failures in deliveries:
                if resolve_failures:
                    conn.execute(
                        "DELETE FROM failures WHERE origin_org = ? AND referral_id = ?"
                        " AND sink = ?",
                        (delivery.origin_org, delivery.referral_id, sink),
                    )
                cur = conn.execute(
                    _RECORD,
                    (
                        delivery.origin_org,
                        delivery.referral_id,
                        sink,
                        delivery.case_id,
                        delivery.topic,
                        delivery.partition,
                        delivery.offset,
                        now,
                        str((delivery.document.get("envelope") or {}).get("priority") or ""),
                        _refs_of(delivery.document),
                        delivery.version,
                        _items_of(delivery.document),
                    ),
                )
                out.append(cur.rowcount == 1)
        return out

    def count_duplicate(self, origin_org: str, referral_id: str, sink: str) -> int:
        """Count one skipped repeat; returns the organisation's total."""
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE deliveries SET duplicates = duplicates + 1"
                " WHERE origin_org = ? AND referral_id = ? AND sink = ?",
                (origin_org, referral_id, sink),
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

    def origins_of(self, referral_id: str) -> list[str]:
        """The origins whose referral ``referral_id`` was delivered here (usually one)."""
        rows = self._db.query(
            "SELECT origin_org FROM deliveries WHERE referral_id = ?"
            " GROUP BY origin_org ORDER BY MIN(delivered_at)",
            (referral_id,),
        )
        return [str(r["origin_org"]) for r in rows]

    def lookup(self, referral_id: str, origin_org: str | None = None) -> InboxRecord | None:
        """The delivery of ``referral_id`` (of ``origin_org``, if given) of its newest version
        (the first sink to deliver that version), or None."""
        where, params = "referral_id = ?", [referral_id]
        if origin_org is not None:
            where, params = "referral_id = ? AND origin_org = ?", [referral_id, origin_org]
        rows = self._db.query(
            f"SELECT * FROM deliveries WHERE {where} ORDER BY version DESC, delivered_at LIMIT 1",
            tuple(params),
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
            partition=int(r["partition"]),
            offset=int(r["offset"]),
            version=int(r["version"] or 1),
        )

    def delivered(self, sink: str | None = None) -> list[str]:
        """Referral ids delivered (by ``sink``, or by any), in delivery order."""
        if sink is None:
            rows = self._db.query(
                "SELECT referral_id FROM deliveries GROUP BY origin_org, referral_id"
                " ORDER BY MIN(delivered_at)"
            )
        else:
            rows = self._db.query(
                "SELECT referral_id FROM deliveries WHERE sink = ? ORDER BY delivered_at", (sink,)
            )
        return [r["referral_id"] for r in rows]

    def referral_ids(self) -> list[str]:
        """Every referral id delivered here (the candidates for a short id)."""
        return [
            str(r["referral_id"])
            for r in self._db.query("SELECT DISTINCT referral_id FROM deliveries")
        ]

    def received(self) -> list[Received]:
        """Every referral delivered here, one per (origin, id), with the statuses sent about it."""
        rows = self._db.query(
            "SELECT origin_org, referral_id, MIN(case_id) AS case_id, MIN(topic) AS topic,"
            " MAX(priority) AS priority, MAX(external_refs) AS external_refs,"
            " MIN(delivered_at) AS delivered_at, GROUP_CONCAT(sink) AS sinks,"
            " SUM(duplicates) AS duplicates, MAX(version) AS version"
            " FROM deliveries GROUP BY origin_org, referral_id"
        )
        sent: dict[tuple[str, str], list[str]] = {}
        for r in self._db.query(
            "SELECT origin_org, referral_id, status FROM sent_statuses ORDER BY at, rowid"
        ):
            sent.setdefault((r["origin_org"], r["referral_id"]), []).append(str(r["status"]))
        return [
            Received(
                referral_id=str(r["referral_id"]),
                origin_org=str(r["origin_org"]),
                case_id=str(r["case_id"]),
                topic=str(r["topic"]),
                priority=str(r["priority"] or ""),
                external_refs=tuple(json.loads(r["external_refs"] or "[]")),
                delivered_at=float(r["delivered_at"]),
                sinks=tuple(sorted(set(str(r["sinks"] or "").split(",")) - {""})),
                duplicates=int(r["duplicates"] or 0),
                sent=tuple(sent.get((r["origin_org"], r["referral_id"]), ())),
                version=int(r["version"] or 1),
            )
            for r in rows
        ]

    # -- refusals and transient failures (the receiving side) ----------------------------------

    def record_refusal(self, refusal: Refusal) -> Refusal:
        """Remember a refusal; the one remembered first if this version was refused already.

        A refusal of a newer version (an amendment refused again) replaces the older one.
        """
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO refusals (origin_org, referral_id, case_id, sink, reason,"
                " emitted_at, version) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(origin_org, referral_id) DO UPDATE SET sink = excluded.sink,"
                " reason = excluded.reason, emitted_at = excluded.emitted_at,"
                " version = excluded.version WHERE excluded.version > refusals.version",
                (
                    refusal.origin_org,
                    refusal.referral_id,
                    refusal.case_id,
                    refusal.sink,
                    refusal.reason,
                    refusal.emitted_at_ms,
                    refusal.version,
                ),
            )
        found = self.refusal(refusal.origin_org, refusal.referral_id)
        assert found is not None
        return found

    def refusal(self, origin_org: str, referral_id: str) -> Refusal | None:
        """The refusal of ``origin_org``'s referral ``referral_id`` (None: not refused)."""
        rows = self._db.query(
            "SELECT * FROM refusals WHERE origin_org = ? AND referral_id = ?",
            (origin_org, referral_id),
        )
        if not rows:
            return None
        r = rows[0]
        return Refusal(
            str(r["origin_org"]),
            str(r["referral_id"]),
            str(r["case_id"]),
            str(r["sink"]),
            str(r["reason"]),
            int(r["emitted_at"]),
            int(r["version"] or 1),
        )

    def clear_refusal(self, origin_org: str, referral_id: str) -> bool:
        """Forget a refusal once a newer version was delivered; True if there was one."""
        with self._db.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM refusals WHERE origin_org = ? AND referral_id = ?",
                (origin_org, referral_id),
            )
            return cur.rowcount > 0

    def refusals(self) -> list[Refusal]:
        """Every refusal, oldest first."""
        rows = self._db.query("SELECT origin_org, referral_id FROM refusals ORDER BY emitted_at")
        out = [self.refusal(str(r["origin_org"]), str(r["referral_id"])) for r in rows]
        return [r for r in out if r is not None]

    def record_failure(
        self, origin_org: str, referral_id: str, sink: str, now: float | None = None
    ) -> int:
        """Count one transient delivery failure (dead-lettered); the open failures of that sink."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO failures (origin_org, referral_id, sink, failures, at)"
                " VALUES (?, ?, ?, 1, ?) ON CONFLICT(origin_org, referral_id, sink)"
                " DO UPDATE SET failures = failures + 1, at = excluded.at",
                (origin_org, referral_id, sink, now),
            )
            row = conn.execute(
                "SELECT failures FROM failures WHERE origin_org = ? AND referral_id = ?"
                " AND sink = ?",
                (origin_org, referral_id, sink),
            ).fetchone()
            return int(row[0])

    def resolve_failures(self, origin_org: str, referral_id: str, sink: str) -> int:
        """Forget the open failures of a referral ``sink`` has now delivered; how many."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT failures FROM failures WHERE origin_org = ? AND referral_id = ?"
                " AND sink = ?",
                (origin_org, referral_id, sink),
            ).fetchone()
            if row is None:
                return 0
            conn.execute(
                "DELETE FROM failures WHERE origin_org = ? AND referral_id = ? AND sink = ?",
                (origin_org, referral_id, sink),
            )
            return int(row[0])

    def open_failures(self) -> int:
        """Referrals with a transient failure no later delivery has resolved yet."""
        rows = self._db.query("SELECT COUNT(*) AS n FROM failures")
        return int(rows[0]["n"])

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

    def count_refused_status(self, stage: str, position: str | None = None) -> int:
        """Count one status update refused at ``stage`` (``STATUS_VERIFY``, ...); its total.

        ``position`` (``topic/partition/offset``) makes the count exact under
        redelivery: a record refused again after a rebalance is counted once.
        """
        with self._db.transaction() as conn:
            if position is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO refused_statuses (position, stage) VALUES (?, ?)",
                    (position, stage),
                )
            else:
                self._bump(conn, REFUSED_STATUSES + stage)
        return self.refused_statuses().get(stage, 0)

    def refused_statuses(self) -> dict[str, int]:
        """Refused status updates by stage."""
        counts: dict[str, int] = {}
        rows = self._db.query(
            "SELECT name, value FROM counters WHERE name LIKE ?", (REFUSED_STATUSES + "%",)
        )
        for r in rows:
            stage = str(r["name"])[len(REFUSED_STATUSES) :]
            counts[stage] = counts.get(stage, 0) + int(r["value"])
        rows = self._db.query("SELECT stage, COUNT(*) AS n FROM refused_statuses GROUP BY stage")
        for r in rows:
            counts[str(r["stage"])] = counts.get(str(r["stage"]), 0) + int(r["n"])
        return counts

    def status_state(
        self, referral_id: str, emitter: str, version: int | None = None
    ) -> str | None:
        """The lifecycle state of ``emitter``'s copy of one of our referrals (None: no status).

        Asked about a ``version`` newer than the one a REJECTED was about, None: the
        amendment starts that recipient's lifecycle again (it answers the refusal).
        """
        rows = self._db.query(
            "SELECT state, version FROM status_state WHERE referral_id = ? AND emitter = ?",
            (referral_id, emitter),
        )
        if not rows:
            return None
        state = str(rows[0]["state"])
        if state == "REJECTED" and version is not None and version > int(rows[0]["version"]):
            return None
        return state

    def set_status_state(
        self, referral_id: str, emitter: str, state: str, version: int = 1
    ) -> None:
        """Remember ``emitter``'s lifecycle state (reached at ``version``) for a referral."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO status_state (referral_id, emitter, state, version)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(referral_id, emitter) DO UPDATE SET"
                " state = excluded.state, version = MAX(version, excluded.version)",
                (referral_id, emitter, state, version),
            )

    def record_outcomes(
        self, referral_id: str, emitter: str, outcomes: Iterable[ItemOutcome], emitted_at_ms: int
    ) -> int:
        """Remember verified item outcomes (the latest per item and emitter wins); how many."""
        n = 0
        with self._db.transaction() as conn:
            for o in outcomes:
                hosting = o.hosting
                cur = conn.execute(
                    "INSERT INTO item_outcomes (referral_id, item_id, emitter, outcome,"
                    " observed_at, hosting_ip, hosting_country, assessed_under, emitted_at_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(referral_id, item_id, emitter) DO UPDATE SET"
                    " outcome = excluded.outcome, observed_at = excluded.observed_at,"
                    " hosting_ip = excluded.hosting_ip, hosting_country = excluded.hosting_country,"
                    " assessed_under = excluded.assessed_under,"
                    " emitted_at_ms = excluded.emitted_at_ms"
                    " WHERE excluded.emitted_at_ms >= item_outcomes.emitted_at_ms",
                    (
                        referral_id,
                        o.item_id,
                        emitter,
                        o.outcome.value,
                        o.observed_at.isoformat(),
                        hosting.ip if hosting else None,
                        hosting.country if hosting else None,
                        o.assessed_under,
                        emitted_at_ms,
                    ),
                )
                n += cur.rowcount
        return n

    def item_states(self, referral_id: str | None = None) -> list[ItemState]:
        """The latest verified outcome of each item (of one referral, or of all)."""
        where, params = ("WHERE referral_id = ?", (referral_id,)) if referral_id else ("", ())
        rows = self._db.query(
            f"SELECT * FROM item_outcomes {where} ORDER BY referral_id, emitted_at_ms, item_id",
            params,
        )
        out = []
        for r in rows:
            hosting = None
            if r["hosting_ip"] or r["hosting_country"]:
                hosting = HostingEvidence(ip=r["hosting_ip"], country=r["hosting_country"])
            outcome = ItemOutcome.model_construct(
                item_id=str(r["item_id"]),
                outcome=ItemOutcomeKind(r["outcome"]),
                observed_at=datetime.fromisoformat(str(r["observed_at"])),
                hosting=hosting,
                assessed_under=r["assessed_under"],
            )
            out.append(
                ItemState(str(r["referral_id"]), str(r["item_id"]), str(r["emitter"]), outcome)
            )
        return out

    # -- statuses this organisation sent (the receiving side) ----------------------------------

    def record_sent_status(
        self,
        origin_org: str,
        referral_id: str,
        status: str,
        now: float | None = None,
        outcomes: Sequence[ItemOutcome] = (),
    ) -> None:
        """Remember a status update this organisation sent about a referral it received,
        with the item outcomes it carried."""
        now = time.time() if now is None else now
        carried = json.dumps([o.model_dump(mode="json") for o in outcomes])
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO sent_statuses (origin_org, referral_id, status, at, outcomes)"
                " VALUES (?, ?, ?, ?, ?)",
                (origin_org, referral_id, status, now, carried),
            )

    def sent_statuses(self, origin_org: str, referral_id: str) -> list[str]:
        """The statuses sent about one referral, in the order they were sent."""
        return [status for status, _ in self._sent(origin_org, referral_id)]

    def sent_outcomes(self, origin_org: str, referral_id: str) -> dict[str, ItemOutcome]:
        """Item id → the outcome this organisation reported last about it (sent order)."""
        latest: dict[str, ItemOutcome] = {}
        for _, outcomes in self._sent(origin_org, referral_id):
            for o in outcomes:
                latest[o.item_id] = o
        return latest

    def _sent(self, origin_org: str, referral_id: str) -> list[tuple[str, list[ItemOutcome]]]:
        rows = self._db.query(
            "SELECT status, outcomes FROM sent_statuses WHERE origin_org = ? AND referral_id = ?"
            " ORDER BY at, rowid",
            (origin_org, referral_id),
        )
        return [
            (
                str(r["status"]),
                [ItemOutcome.model_validate(o) for o in json.loads(r["outcomes"] or "[]")],
            )
            for r in rows
        ]

    def flush(self) -> None:
        """Make what was recorded so far durable (before it is acknowledged)."""
        self._db.sync()

    def close(self) -> None:
        """Close the database."""
        self._db.close()
