"""The liaison's inbox: what an organisation received, newest urgent work first.

The rules it follows: broker/receiver/README.md, section `inbox_view`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.ids import matches
from broker.lifecycle import LifecycleError, advance
from broker.network import Deadlines
from broker.origin.withdrawal import WITHDRAWN
from broker.receiver.inbox import Received
from broker.wire.models import ReferralStatus
from connectors.formats import spreadsheet_safe

__all__ = ["CSV_COLUMNS", "InboxEntry", "entries", "missed_deadlines", "select", "to_csv"]

#: Columns of ``referral inbox --csv`` (and keys of each ``--json`` entry).
CSV_COLUMNS = (
    "referral_id",
    "case_id",
    "origin_org",
    "priority",
    "urgent",
    "received_at",
    "status",
    "acknowledged",
    "due_at",
    "overdue",
    "external_refs",
    "topic",
    "sinks",
    "version",
)


@dataclass(frozen=True)
class InboxEntry:
    """One received referral with where it stands for the receiving organisation."""

    referral_id: str
    case_id: str
    origin_org: str
    priority: str
    urgent: bool
    received_at: datetime
    status: str
    acknowledged: bool
    due_at: datetime
    overdue: bool
    external_refs: tuple[str, ...]
    topic: str
    sinks: tuple[str, ...]
    #: The current version (above 1: the origin amended it).
    version: int = 1
    #: Its origin withdrew it from this organisation (an amendment dropped it): status WITHDRAWN.
    withdrawn: bool = False

    @property
    def high(self) -> bool:
        """True if the origin marked it HIGH priority (sorted after URGENT, before the rest)."""
        return not self.urgent and self.priority == "HIGH"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 UTC)."""
        return {
            "referral_id": self.referral_id,
            "case_id": self.case_id,
            "origin_org": self.origin_org,
            "priority": self.priority,
            "urgent": self.urgent,
            "received_at": _iso(self.received_at),
            "status": self.status,
            "acknowledged": self.acknowledged,
            "due_at": _iso(self.due_at),
            "overdue": self.overdue,
            "external_refs": list(self.external_refs),
            "topic": self.topic,
            "sinks": list(self.sinks),
            "version": self.version,
            "withdrawn": self.withdrawn,
        }

    def matches(self, term: str) -> bool:
        """True if ``term`` is part of the case id or of an external reference, or an id prefix."""
        t = term.strip().lower()
        if not t:
            return True
        if t in self.case_id.lower() or matches(t, self.referral_id):
            return True
        return any(t in ref.lower() for ref in self.external_refs)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(sent: Sequence[str]) -> str:
    current: ReferralStatus | None = ReferralStatus.RECEIVED
    for s in sent:
        try:
            current = advance(current, s)
        except (LifecycleError, ValueError):  # refused now: the furthest valid one stands
            continue
    return current.value if current is not None else ReferralStatus.RECEIVED.value


def entries(received: Iterable[Received], deadlines: Deadlines, now: datetime) -> list[InboxEntry]:
    """The inbox entries of ``received``: urgent, high, then overdue first, then newest first."""
    out: list[InboxEntry] = []
    for r in received:
        urgent = r.priority == "URGENT" or (not r.priority and r.topic.endswith(".urgent"))
        at = datetime.fromtimestamp(r.delivered_at, UTC)
        hours = deadlines.urgent_answer_hours if urgent else deadlines.answer_hours
        due = at + timedelta(hours=hours)
        withdrawn = r.withdrawn is not None and r.withdrawn >= r.version
        status = WITHDRAWN if withdrawn else _status(r.sent)
        acknowledged = status != ReferralStatus.RECEIVED.value  # withdrawn: nothing to answer
        out.append(
            InboxEntry(
                referral_id=r.referral_id,
                case_id=r.case_id,
                origin_org=r.origin_org,
                priority=r.priority or ("URGENT" if urgent else ""),
                urgent=urgent,
                received_at=at,
                status=status,
                acknowledged=acknowledged,
                due_at=due,
                overdue=not acknowledged and now > due,
                external_refs=r.external_refs,
                topic=r.topic,
                sinks=r.sinks,
                version=r.version,
                withdrawn=withdrawn,
            )
        )
    out.sort(key=lambda e: (not e.urgent, not e.high, not e.overdue, -e.received_at.timestamp()))
    return out


def missed_deadlines(
    received: Iterable[Received], deadlines: Deadlines, now: datetime
) -> dict[str, int]:
    """Deadline name → referrals past it without their answer (``answer``: the inbox's overdue)."""
    return {"answer": sum(e.overdue for e in entries(received, deadlines, now))}


def select(
    items: Iterable[InboxEntry],
    *,
    since: datetime | None = None,
    search: str | None = None,
    unacknowledged: bool = False,
    overdue: bool = False,
) -> list[InboxEntry]:
    """The entries received at or after ``since``, matching ``search``, and the flags."""
    return [
        e
        for e in items
        if (since is None or e.received_at >= since)
        and (search is None or e.matches(search))
        and (not unacknowledged or not e.acknowledged)
        and (not overdue or e.overdue)
    ]


def to_csv(items: Iterable[InboxEntry]) -> str:
    """The entries as CSV with a header row (:data:`CSV_COLUMNS`; lists ``;``-separated)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in items:
        d = e.to_json()
        writer.writerow(
            spreadsheet_safe(";".join(d[c]))
            if isinstance(d[c], list)
            else str(d[c]).lower()
            if isinstance(d[c], bool)
            else spreadsheet_safe(d[c])
            for c in CSV_COLUMNS
        )
    return buf.getvalue()
