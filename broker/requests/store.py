"""A SPOC's own record of its police requests and their clocks (SQLite, private to it).

One row per request, asked of this SPOC (``side = 'of_me'``: it owes the answer)
or by it (``'by_me'``). Clock columns: ``due_at`` is the legal time limit
(receipt + limit + time paused for clarification), ``alarm_at`` when the request
is overdue if still open (``due_at``, or a later date a DELAY announced).
``state``: OPEN, PAUSED (clarification asked), ANSWERED, REFUSED.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.requests.codes import Access, MessageKind, limit_ms
from broker.requests.wire import RequestError
from broker.sqlite import Database

__all__ = ["OPEN_STATES", "RequestRow", "RequestStore", "overdue_owed"]

OPEN_STATES = ("OPEN", "PAUSED")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id    TEXT PRIMARY KEY,
    side          TEXT NOT NULL,
    case_id       TEXT NOT NULL,
    referral_id   TEXT,
    counterpart   TEXT NOT NULL,
    urgent        INTEGER NOT NULL,
    access        TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    limit_ms      INTEGER NOT NULL,
    paused_total  INTEGER NOT NULL DEFAULT 0,
    paused_since  INTEGER,
    due_at        INTEGER NOT NULL,
    alarm_at      INTEGER NOT NULL,
    delay_reason  TEXT,
    delayed_until INTEGER,
    state         TEXT NOT NULL,
    closed_at     INTEGER,
    ground        TEXT,
    overdue_at    INTEGER,
    language      TEXT NOT NULL DEFAULT 'en',
    handling      TEXT NOT NULL DEFAULT 'H0'
);
CREATE INDEX IF NOT EXISTS requests_alarm ON requests (side, state, alarm_at);
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    direction  TEXT NOT NULL,
    at         INTEGER NOT NULL,
    content    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    topic     TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next      INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""


@dataclass(frozen=True)
class RequestRow:
    """One request as this SPOC holds it."""

    request_id: str
    side: str
    case_id: str
    referral_id: str | None
    counterpart: str
    urgent: bool
    access: str
    started_at: int
    due_at: int
    alarm_at: int
    state: str
    delay_reason: str | None
    delayed_until: int | None
    closed_at: int | None
    ground: str | None
    overdue_at: int | None
    language: str
    handling: str

    @classmethod
    def of(cls, row: sqlite3.Row) -> RequestRow:
        """The row as read from the store."""
        fields = {f: row[f] for f in cls.__dataclass_fields__ if f != "urgent"}
        return cls(**fields, urgent=bool(row["urgent"]))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


class RequestStore:
    """The requests, messages and read positions of one SPOC."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path, _SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def get(self, request_id: str) -> RequestRow:
        """The request ``request_id`` (a unique prefix of 8+ characters will do)."""
        rows = self.db.query(
            "SELECT * FROM requests WHERE request_id LIKE ? LIMIT 2", (request_id.lower() + "%",)
        )
        if len(rows) != 1 or len(request_id) < 8:
            raise RequestError(f"no request {request_id[:36]} here (give 8 or more characters)")
        return RequestRow.of(rows[0])

    def rows(self, side: str | None = None, *, overdue: bool = False) -> list[RequestRow]:
        """Requests of one side (None: both), the soonest due first; ``overdue``: only those."""
        sql, params = "SELECT * FROM requests WHERE 1=1", []
        if side:
            sql, params = sql + " AND side = ?", [side]
        if overdue:
            sql += " AND overdue_at IS NOT NULL AND state IN ('OPEN', 'PAUSED')"
        rows = self.db.query(sql + " ORDER BY alarm_at, request_id", tuple(params))
        return [RequestRow.of(r) for r in rows]

    def owed_overdue(self, now: int) -> list[RequestRow]:
        """Requests this SPOC owes that are past their alarm at ``now`` and not paused."""
        rows = self.db.query(
            "SELECT * FROM requests WHERE side = 'of_me' AND state = 'OPEN' AND alarm_at < ?"
            " ORDER BY alarm_at, request_id",
            (now,),
        )
        return [RequestRow.of(r) for r in rows]

    def has_message(self, message_id: str) -> bool:
        """True if this message was already sent or received."""
        return bool(self.db.query("SELECT 1 FROM messages WHERE message_id = ?", (message_id,)))

    def positions(self, topic: str) -> dict[int, int]:
        """Partition → next offset to read."""
        rows = self.db.query("SELECT partition, next FROM positions WHERE topic = ?", (topic,))
        return {int(r["partition"]): int(r["next"]) for r in rows}

    def record(
        self,
        envelope: Mapping[str, Any],
        content: Mapping[str, Any],
        *,
        me: str,
        at: int,
        position: tuple[str, int, int] | None = None,
    ) -> RequestRow | None:
        """Apply one message sent or received at ``at``; the request after it (None: unknown)."""
        kind = MessageKind(str(envelope["kind"]))
        outgoing = envelope["from_org"] == me
        request_id = str(envelope["request_id"])
        with self.db.transaction() as conn:
            if position is not None:
                conn.execute(
                    "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (topic, partition)"
                    " DO UPDATE SET next = excluded.next",
                    (position[0], position[1], position[2] + 1),
                )
            if conn.execute(
                "SELECT 1 FROM messages WHERE message_id = ?", (str(envelope["message_id"]),)
            ).fetchone():
                return None
            row = conn.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,))
            known = row.fetchone()
            if kind is MessageKind.REQUEST:
                if known is not None or request_id != str(envelope["message_id"]):
                    return None
                _insert_request(conn, envelope, content, outgoing=outgoing, at=at)
            elif known is None or not _may(kind, envelope, RequestRow.of(known), me):
                return None
            else:
                _apply(conn, kind, request_id, content, at)
            conn.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                (
                    str(envelope["message_id"]),
                    request_id,
                    kind.value,
                    "out" if outgoing else "in",
                    at,
                    json.dumps(dict(content), sort_keys=True),
                ),
            )
            row = conn.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,))
            return RequestRow.of(row.fetchone())

    def flag_overdue(self, now: int) -> list[RequestRow]:
        """Mark the requests owed by this SPOC that are past their limit at ``now``; those."""
        sql = (
            "SELECT * FROM requests WHERE side = 'of_me' AND state = 'OPEN'"
            " AND alarm_at < ? AND overdue_at IS NULL"
        )
        if not self.db.query(sql + " LIMIT 1", (now,)):
            return []  # the usual case: one indexed read, no write
        with self.db.transaction() as conn:
            found = conn.execute(sql, (now,)).fetchall()
            conn.executemany(
                "UPDATE requests SET overdue_at = ? WHERE request_id = ?",
                [(now, r["request_id"]) for r in found],
            )
        return [RequestRow.of(r) for r in found]

    def messages(self, request_id: str) -> list[dict[str, Any]]:
        """The messages of a request, oldest first, with their content."""
        rows = self.db.query(
            "SELECT * FROM messages WHERE request_id = ? ORDER BY at, message_id", (request_id,)
        )
        return [{**dict(r), "content": json.loads(r["content"])} for r in rows]


def overdue_owed(path: Path, now: int) -> list[RequestRow]:
    """The requests a SPOC's store at ``path`` owes past their alarm at ``now`` (none: no store)."""
    if not path.exists():
        return []
    store = RequestStore(path)
    try:
        return store.owed_overdue(now)
    finally:
        store.close()


def _may(kind: MessageKind, envelope: Mapping[str, Any], row: RequestRow, me: str) -> bool:
    """True if this step of an open request comes from the party it must and goes to the other."""
    if row.state not in OPEN_STATES:
        return False
    requested = me if row.side == "of_me" else row.counterpart
    requester = row.counterpart if row.side == "of_me" else me
    sender, receiver = (
        (requester, requested)
        if kind is MessageKind.CLARIFICATION_GIVEN
        else (requested, requester)
    )
    return bool(envelope["from_org"] == sender and envelope["to_org"] == receiver)


def _insert_request(
    conn: sqlite3.Connection,
    envelope: Mapping[str, Any],
    content: Mapping[str, Any],
    *,
    outgoing: bool,
    at: int,
) -> None:
    limit = limit_ms(bool(content["urgent"]), Access(content["access"]))
    counterpart = envelope["to_org"] if outgoing else envelope["from_org"]
    conn.execute(
        "INSERT INTO requests (request_id, side, case_id, referral_id, counterpart, urgent,"
        " access, started_at, limit_ms, due_at, alarm_at, state, language, handling)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'OPEN', ?, ?)",
        (
            str(envelope["request_id"]),
            "by_me" if outgoing else "of_me",
            str(envelope["case_id"]),
            envelope.get("referral_id"),
            str(counterpart),
            int(bool(content["urgent"])),
            str(content["access"]),
            at,
            limit,
            at + limit,
            at + limit,
            str(content.get("language", "en")),
            str(content.get("handling", "H0")),
        ),
    )


def _apply(
    conn: sqlite3.Connection,
    kind: MessageKind,
    request_id: str,
    content: Mapping[str, Any],
    at: int,
) -> None:
    where = " WHERE request_id = ?"
    if kind in (MessageKind.ANSWER, MessageKind.REFUSAL):
        state = "ANSWERED" if kind is MessageKind.ANSWER else "REFUSED"
        # Closed while a clarification is pending: the open pause counts until now.
        conn.execute(
            "UPDATE requests SET state = ?, closed_at = ?, ground = ?,"
            " paused_total = paused_total + COALESCE(? - paused_since, 0),"
            " due_at = due_at + COALESCE(? - paused_since, 0), paused_since = NULL" + where,
            (state, at, content.get("ground"), at, at, request_id),
        )
    elif kind is MessageKind.CLARIFICATION_ASKED:
        conn.execute(
            "UPDATE requests SET state = 'PAUSED', paused_since = ?" + where, (at, request_id)
        )
    elif kind is MessageKind.CLARIFICATION_GIVEN:
        conn.execute(
            "UPDATE requests SET state = 'OPEN',"
            " paused_total = paused_total + (? - paused_since),"
            " due_at = due_at + (? - paused_since),"
            " alarm_at = MAX(due_at + (? - paused_since), COALESCE(delayed_until, 0)),"
            " paused_since = NULL" + where + " AND state = 'PAUSED'",
            (at, at, at, request_id),
        )
    elif kind is MessageKind.DELAY:
        until = int(content["expected_ms"])
        conn.execute(
            "UPDATE requests SET delay_reason = ?, delayed_until = ?,"
            " alarm_at = MAX(due_at, ?)" + where,
            (str(content["reason"]), until, until, request_id),
        )
