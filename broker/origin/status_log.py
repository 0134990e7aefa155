"""The origin's status log: status updates handed on, each recipient's state, item outcomes.

The origin half of what used to be the inbox; file ``<state_dir>/orgs/<org>/status_log.sqlite3``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from broker.config import Settings
from broker.sqlite import COUNTERS_TABLE, Database, bump_counter
from broker.wire.models import HostingEvidence, ItemOutcome, ItemOutcomeKind

__all__ = ["REFUSED_STATUSES", "STATUS_DUPLICATES", "ItemState", "Settled", "StatusLog"]

log = logging.getLogger("referral.origin.status_log")

#: Counter of repeated status updates that were skipped.
STATUS_DUPLICATES = "inbox.status_duplicates"
#: Counters of refused status updates, by dead-letter stage (this prefix + the stage).
REFUSED_STATUSES = "inbox.refused_statuses."

_TABLES = ("statuses", "status_state", "refused_statuses", "item_outcomes")

_SCHEMA = """
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
"""


@dataclass(frozen=True)
class ItemState:
    """The latest verified outcome of one item of one of the origin's referrals, per emitter."""

    referral_id: str
    item_id: str
    emitter: str
    outcome: ItemOutcome


@dataclass(frozen=True)
class Settled:
    """One status update handed on: what the log keeps of it (written with its batch)."""

    key: str
    referral_id: str
    emitter: str
    #: The emitter's lifecycle state after it (None: unchanged), reached at ``version``.
    state: str | None
    version: int
    outcomes: Sequence[ItemOutcome] = field(default=())
    emitted_at_ms: int = 0


class StatusLog:
    """The status log of one origin organisation (thread-safe)."""

    def __init__(self, path: Path, legacy: Path | None = None) -> None:
        self.path = Path(path)
        fresh = not self.path.exists()
        self._db = Database(self.path, _SCHEMA + COUNTERS_TABLE)
        self._db.add_columns("status_state", {"version": "INTEGER NOT NULL DEFAULT 1"})
        if fresh and legacy is not None and legacy.exists():
            self._import(legacy)

    def _import(self, legacy: Path) -> None:
        """Copy the origin's tables from an inbox file of earlier versions (once, on creation)."""
        self._db.query("ATTACH DATABASE ? AS legacy", (str(legacy),))
        try:
            have = {
                str(r["name"])
                for r in self._db.query("SELECT name FROM legacy.sqlite_master WHERE type='table'")
            }
            with self._db.transaction() as conn:
                for table in _TABLES:
                    if table in have:
                        # By the columns both have (older files lack later columns).
                        theirs = [r[1] for r in conn.execute(f"PRAGMA legacy.table_info({table})")]
                        ours = {r[1] for r in conn.execute(f"PRAGMA main.table_info({table})")}
                        cols = ", ".join(c for c in theirs if c in ours)
                        conn.execute(
                            f"INSERT OR IGNORE INTO main.{table} ({cols})"
                            f" SELECT {cols} FROM legacy.{table}"
                        )
                if "counters" in have:
                    conn.execute(
                        "INSERT OR IGNORE INTO main.counters SELECT * FROM legacy.counters"
                        " WHERE name = ? OR name LIKE ?",
                        (STATUS_DUPLICATES, REFUSED_STATUSES + "%"),
                    )
        except sqlite3.Error as exc:
            # An unreadable older file: the log starts empty (repeated statuses are handed on).
            log.warning("status log: not imported from %s: %s", legacy.name, type(exc).__name__)
        finally:
            self._db.query("DETACH DATABASE legacy")

    @classmethod
    def for_org(cls, settings: Settings, org_id: str) -> StatusLog:
        """The status log at ``<state_dir>/orgs/<org>/status_log.sqlite3``."""
        folder = settings.org_dir(org_id)
        return cls(folder / "status_log.sqlite3", legacy=folder / "inbox.sqlite3")

    def counter(self, name: str) -> int:
        """The value of a counter (0 if never counted)."""
        return self._db.counter(name)

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
            return bump_counter(conn, STATUS_DUPLICATES)

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
                bump_counter(conn, REFUSED_STATUSES + stage)
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
            self._set_state(conn, referral_id, emitter, state, version)

    @staticmethod
    def _set_state(
        conn: sqlite3.Connection, referral_id: str, emitter: str, state: str, version: int
    ) -> None:
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
        with self._db.transaction() as conn:
            return self._record_outcomes(conn, referral_id, emitter, outcomes, emitted_at_ms)

    @staticmethod
    def _record_outcomes(
        conn: sqlite3.Connection,
        referral_id: str,
        emitter: str,
        outcomes: Iterable[ItemOutcome],
        emitted_at_ms: int,
    ) -> int:
        n = 0
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

    def settle(
        self, settled: Iterable[Settled], duplicates: int = 0, now: float | None = None
    ) -> None:
        """Record a batch's handed-on status updates and skipped repeats in one transaction."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            for s in settled:
                if s.outcomes:
                    self._record_outcomes(
                        conn, s.referral_id, s.emitter, s.outcomes, s.emitted_at_ms
                    )
                conn.execute(
                    "INSERT OR IGNORE INTO statuses (key, referral_id, at) VALUES (?, ?, ?)",
                    (s.key, s.referral_id, now),
                )
                if s.state is not None:
                    self._set_state(conn, s.referral_id, s.emitter, s.state, s.version)
            for _ in range(duplicates):
                bump_counter(conn, STATUS_DUPLICATES)

    def flush(self) -> None:
        """Make what was recorded so far durable (before it is acknowledged)."""
        self._db.sync()

    def erase(self, referral_id: str) -> int:
        """Forget what the recipients said about one referral; rows gone."""
        key = (referral_id,)
        return self._db.erase(
            [
                (f"DELETE FROM {table} WHERE referral_id = ?", key)
                for table in ("statuses", "status_state", "item_outcomes")
            ]
        )

    def close(self) -> None:
        """Close the database."""
        self._db.close()
