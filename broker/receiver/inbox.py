"""The receiving side's memory: what each sink has delivered, keyed by (origin, referral id).

The rules it follows: broker/receiver/README.md, section `inbox`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.contracts import Delivery, Withdrawal
from broker.retention import Candidate
from broker.sqlite import COUNTERS_TABLE, Database, bump_counter
from broker.wire.models import ItemOutcome

__all__ = [
    "DUPLICATES",
    "DeliveryState",
    "Inbox",
    "InboxRecord",
    "Received",
    "SinkRefusal",
]

#: Counter of redelivered referrals that were skipped.
DUPLICATES = "inbox.duplicates"

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
CREATE TABLE IF NOT EXISTS erased (
    origin_org  TEXT NOT NULL,
    referral_id TEXT NOT NULL,
    at          REAL NOT NULL,
    why         TEXT NOT NULL,
    PRIMARY KEY (origin_org, referral_id)
);
CREATE TABLE IF NOT EXISTS withdrawals (
    origin_org   TEXT NOT NULL,
    referral_id  TEXT NOT NULL,
    version      INTEGER NOT NULL,
    withdrawn_at TEXT NOT NULL,
    recorded_at  REAL NOT NULL,
    PRIMARY KEY (origin_org, referral_id)
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
    "tlp": "TEXT NOT NULL DEFAULT ''",
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
    #: The version its origin withdrew (an amendment dropped this organisation); None: none.
    withdrawn: int | None = None


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
class SinkRefusal:
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
    refusal: SinkRefusal | None
    #: Sink kind → its transient failures still open.
    failures: dict[str, int]
    #: Erased here (by rule or on request): never delivered again.
    erased: bool = False


#: A referral's deliveries, refusal and open failures: one look-up before each delivery.
_STATE = (
    "SELECT 'd', sink, version, NULL, NULL, NULL FROM deliveries"
    " WHERE origin_org = ?1 AND referral_id = ?2"
    " UNION ALL SELECT 'f', sink, failures, NULL, NULL, NULL FROM failures"
    " WHERE origin_org = ?1 AND referral_id = ?2"
    " UNION ALL SELECT 'r', sink, version, case_id, reason, emitted_at FROM refusals"
    " WHERE origin_org = ?1 AND referral_id = ?2"
    " UNION ALL SELECT 'e', NULL, NULL, NULL, NULL, NULL FROM erased"
    " WHERE origin_org = ?1 AND referral_id = ?2"
)

_RECORD = (
    "INSERT INTO deliveries (origin_org, referral_id, sink, case_id, topic,"
    ' partition, "offset", delivered_at, priority, external_refs, version, items, tlp)'
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(origin_org, referral_id, sink) DO UPDATE SET"
    " version = excluded.version, items = excluded.items, topic = excluded.topic,"
    " tlp = excluded.tlp,"
    ' partition = excluded.partition, "offset" = excluded."offset",'
    " priority = excluded.priority, external_refs = excluded.external_refs"
    " WHERE excluded.version > deliveries.version"
)


def _tlp_of(document: dict[str, Any]) -> str:
    handling = (document.get("envelope") or {}).get("handling") or {}
    return str(handling.get("tlp") or "")


class Inbox:
    """The inbox of one receiving organisation (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = Database(self.path, _SCHEMA + COUNTERS_TABLE)
        old = self._db.query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'delivered'"
        )
        if old:
            with self._db.transaction() as conn:
                for statement in _MIGRATE.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        self._db.add_columns("deliveries", _ADDED_COLUMNS)
        self._db.add_columns("refusals", _VERSION_COLUMN)
        self._db.add_columns("sent_statuses", _SENT_OUTCOMES_COLUMN)

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
        erased = False
        for kind, sink, n, case_id, reason, at in self._db.query(_STATE, (origin_org, referral_id)):
            if kind == "e":
                erased = True
            elif kind == "d":
                versions[str(sink)] = int(n or 1)
            elif kind == "f":
                failures[str(sink)] = int(n)
            else:
                refusal = SinkRefusal(
                    origin_org,
                    referral_id,
                    str(case_id),
                    str(sink),
                    str(reason),
                    int(at),
                    int(n or 1),
                )
        return DeliveryState(versions, refusal, failures, erased)

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
                        _tlp_of(delivery.document),
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
            return bump_counter(conn, DUPLICATES)

    def counter(self, name: str) -> int:
        """The value of a counter (0 if never counted)."""
        return self._db.counter(name)

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
        withdrawn = {
            (str(r["origin_org"]), str(r["referral_id"])): int(r["version"])
            for r in self._db.query("SELECT origin_org, referral_id, version FROM withdrawals")
        }
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
                withdrawn=withdrawn.get((str(r["origin_org"]), str(r["referral_id"]))),
            )
            for r in rows
        ]

    # -- withdrawals (an amendment dropped this organisation) ----------------------------------

    def record_withdrawal(self, withdrawal: Withdrawal, now: float | None = None) -> None:
        """Remember that the origin withdrew this version (a newer withdrawal replaces it)."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO withdrawals (origin_org, referral_id, version, withdrawn_at,"
                " recorded_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(origin_org, referral_id) DO UPDATE SET"
                " version = excluded.version, withdrawn_at = excluded.withdrawn_at,"
                " recorded_at = excluded.recorded_at WHERE excluded.version > withdrawals.version",
                (
                    withdrawal.origin_org,
                    withdrawal.referral_id,
                    withdrawal.version,
                    withdrawal.withdrawn_at,
                    time.time() if now is None else now,
                ),
            )

    def withdrawn_version(self, origin_org: str, referral_id: str) -> int | None:
        """The version of the referral its origin withdrew from here (None: not withdrawn)."""
        rows = self._db.query(
            "SELECT version FROM withdrawals WHERE origin_org = ? AND referral_id = ?",
            (origin_org, referral_id),
        )
        return int(rows[0]["version"]) if rows else None

    # -- refusals and transient failures (the receiving side) ----------------------------------

    def record_refusal(self, refusal: SinkRefusal) -> SinkRefusal:
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

    def refusal(self, origin_org: str, referral_id: str) -> SinkRefusal | None:
        """The refusal of ``origin_org``'s referral ``referral_id`` (None: not refused)."""
        rows = self._db.query(
            "SELECT * FROM refusals WHERE origin_org = ? AND referral_id = ?",
            (origin_org, referral_id),
        )
        if not rows:
            return None
        r = rows[0]
        return SinkRefusal(
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

    def refusals(self) -> list[SinkRefusal]:
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

    def erase(self, origin_org: str, referral_id: str, why: str, now: float | None = None) -> int:
        """Forget everything about one referral (deliveries, refusals, statuses); rows gone.

        What stays is that it was erased and why (a code, no content): it is never
        delivered again.
        """
        at = time.time() if now is None else now
        keep = (
            "INSERT OR IGNORE INTO erased (origin_org, referral_id, at, why) VALUES (?, ?, ?, ?)",
            (origin_org, referral_id, at, why[:64]),
        )
        return self._db.erase(_erase_statements(origin_org, referral_id), then=[keep])

    def erased(self) -> list[tuple[str, str, float, str]]:
        """(origin, referral id, when, why) of every referral erased here."""
        rows = self._db.query("SELECT origin_org, referral_id, at, why FROM erased ORDER BY at")
        return [(str(r[0]), str(r[1]), float(r[2]), str(r[3])) for r in rows]

    def retention_candidates(self) -> list[Candidate]:
        """Every referral held, as the retention rules see it (label, outcome, times)."""
        rows = self._db.query(
            "SELECT origin_org, referral_id, MAX(tlp) AS tlp, MIN(delivered_at) AS at"
            " FROM deliveries GROUP BY origin_org, referral_id"
        )
        out = []
        for r in rows:
            origin, rid = str(r["origin_org"]), str(r["referral_id"])
            outcome, outcome_at = self._outcome(origin, rid)
            out.append(
                Candidate(origin, rid, str(r["tlp"] or ""), outcome, outcome_at, _utc(r["at"]))
            )
        return out

    def _outcome(self, origin_org: str, referral_id: str) -> tuple[str | None, datetime | None]:
        """The last status this organisation sent, or every item's common outcome, and when."""
        rows = self._db.query(
            "SELECT status, at FROM sent_statuses WHERE origin_org = ? AND referral_id = ?"
            " ORDER BY at DESC, rowid DESC LIMIT 1",
            (origin_org, referral_id),
        )
        if not rows:
            return None, None
        sent = self.sent_outcomes(origin_org, referral_id)
        items = {o.outcome.value for o in sent.values()}
        every = bool(sent) and set(sent) >= set(self.item_ids(origin_org, referral_id))
        outcome = next(iter(items)) if every and len(items) == 1 else str(rows[0]["status"])
        return outcome, _utc(rows[0]["at"])

    def flush(self) -> None:
        """Make what was recorded so far durable (before it is acknowledged)."""
        self._db.sync()

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(float(epoch), UTC)


def _erase_statements(origin_org: str, referral_id: str) -> list[tuple[str, tuple[object, ...]]]:
    key = (origin_org, referral_id)
    return [
        (f"DELETE FROM {table} WHERE origin_org = ? AND referral_id = ?", key)
        for table in ("deliveries", "refusals", "failures", "sent_statuses", "withdrawals")
    ]
