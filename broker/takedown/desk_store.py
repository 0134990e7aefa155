"""The takedown desk's state in SQLite: a restart resumes every item's cadence where it was.

One row per item: its ids, its URL (the notice needs it; the file is private,
``0600`` in the hotline's state dir), when it became due, its first notice, the
cadence step last notified and whether it is answered or escalated. The desk
saves an item's row in the same step as it records it, so a restarted desk
neither repeats a notice of the current step nor forgets a due one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from broker.sqlite import Database
from broker.takedown.trail import TrailItem

__all__ = ["DESK_FILE", "PLACES", "DeskItem", "DeskStore"]

#: The desk's file in a hotline's state dir.
DESK_FILE = "takedown.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS desk_items (
    item_id          TEXT PRIMARY KEY,
    referral_id      TEXT NOT NULL,
    case_id          TEXT NOT NULL,
    provider         TEXT NOT NULL,
    country          TEXT NOT NULL,
    route            TEXT NOT NULL,
    url              TEXT NOT NULL,
    opened_ms        INTEGER,
    due_ms           INTEGER,
    police_ms        INTEGER,
    cleared_ms       INTEGER,
    first_notice_ms  INTEGER,
    last_notice_ms   INTEGER,
    step             INTEGER NOT NULL DEFAULT 0,
    answered         INTEGER NOT NULL DEFAULT 0,
    escalated        INTEGER NOT NULL DEFAULT 0,
    answers          INTEGER NOT NULL DEFAULT 0,
    rechecks         INTEGER NOT NULL DEFAULT 0
);
"""

_COLUMNS = (
    "item_id, referral_id, case_id, provider, country, route, url, opened_ms, due_ms,"
    " police_ms, cleared_ms, first_notice_ms, last_notice_ms, step, answered, escalated,"
    " answers, rechecks"
)


@dataclass
class DeskItem:
    """One item on the desk: where it is on its cadence."""

    item: TrailItem
    url: str
    opened_ms: int | None = None
    due_ms: int | None = None
    police_ms: int | None = None
    cleared_ms: int | None = None
    first_notice_ms: int | None = None
    last_notice_ms: int | None = None
    step: int = 0
    answered: bool = False
    escalated: bool = False
    answers: int = 0
    rechecks: int = 0

    @property
    def where(self) -> str:
        """Where the item is: opened, informed (awaiting clearance), due, notified, escalated,
        answered."""
        if self.answered:
            return "answered"
        if self.escalated:
            return "escalated"
        if self.first_notice_ms is not None:
            return "notified"
        if self.due_ms is not None:
            return "due"
        return "informed" if self.police_ms is not None else "opened"


#: The places of :attr:`DeskItem.where`, in cadence order.
PLACES = ("opened", "informed", "due", "notified", "escalated", "answered")


class DeskStore:
    """The desk's items in one private SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = Database(self.path, _SCHEMA)

    def save(self, states: Iterable[DeskItem]) -> None:
        """Write these items' rows in one transaction."""
        rows = [
            (
                s.item.item_id,
                s.item.referral_id,
                s.item.case_id,
                s.item.provider,
                s.item.country,
                s.item.route,
                s.url,
                s.opened_ms,
                s.due_ms,
                s.police_ms,
                s.cleared_ms,
                s.first_notice_ms,
                s.last_notice_ms,
                s.step,
                int(s.answered),
                int(s.escalated),
                s.answers,
                s.rechecks,
            )
            for s in states
        ]
        with self._db.transaction() as conn:
            conn.executemany(
                f"INSERT OR REPLACE INTO desk_items ({_COLUMNS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        self._db.sync()

    def load(self) -> Iterator[DeskItem]:
        """Every item on the desk."""
        for r in self._db.query(f"SELECT {_COLUMNS} FROM desk_items ORDER BY rowid"):
            item = TrailItem(
                r["referral_id"],
                r["case_id"],
                r["item_id"],
                r["provider"],
                r["country"],
                r["route"],
            )
            yield DeskItem(
                item,
                r["url"],
                r["opened_ms"],
                r["due_ms"],
                r["police_ms"],
                r["cleared_ms"],
                r["first_notice_ms"],
                r["last_notice_ms"],
                int(r["step"]),
                bool(r["answered"]),
                bool(r["escalated"]),
                int(r["answers"]),
                int(r["rechecks"]),
            )

    def close(self) -> None:
        """Close the file."""
        self._db.close()
