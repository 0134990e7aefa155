"""Art. 18 statistics of Directive 2023/977 from the signed ledger, per member state and year.

Counted from the ``REQUEST_*`` events each SPOC signed (never from its own desk):
requests sent and received (by urgency and the other state), those answered
within the limit and late (by urgency and requesting state), refusals by Art. 6
ground, and deviations (delays by reason, late answers, overdue flags). A
request's limit runs from its ``REQUEST_RECEIVED`` at the requested SPOC, plus
every pause from a clarification it asked (its ``REQUEST_CLARIFICATION_ASKED``)
to the clarification's receipt (its ``REQUEST_CLARIFICATION_GIVEN``).
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from broker.ledger.views import HandoverRecord
from broker.network import Network
from broker.requests.codes import Access, limit_ms
from broker.requests.routes import spocs

__all__ = ["URGENCIES", "Art18", "art18", "to_csv", "urgency_class"]

URGENCIES = ("urgent-direct", "urgent-indirect", "non-urgent")


def urgency_class(urgent: bool, access: str) -> str:
    """``urgent-direct`` (8 h), ``urgent-indirect`` (3 days) or ``non-urgent`` (7 days)."""
    if not urgent:
        return "non-urgent"
    return "urgent-direct" if access == Access.DIRECT.value else "urgent-indirect"


def _codes(reason: str | None) -> dict[str, str]:
    return dict(p.split("=", 1) for p in (reason or "").split(";") if "=" in p)


def _year(at_ms: int) -> int:
    return datetime.fromtimestamp(at_ms / 1000, UTC).year


@dataclass
class Art18:
    """The Art. 18 tables of one member state for one year."""

    state: str
    spoc: str
    year: int
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)  # (urgency, requested state)
    received: Counter[tuple[str, str]] = field(default_factory=Counter)  # (urgency, requesting)
    within: Counter[tuple[str, str]] = field(default_factory=Counter)  # answered within the limit
    late: Counter[tuple[str, str]] = field(default_factory=Counter)  # answered after it
    refusals: Counter[str] = field(default_factory=Counter)  # by Art. 6 ground
    delayed: Counter[str] = field(default_factory=Counter)  # by delay reason
    overdue: int = 0

    def to_json(self) -> dict[str, Any]:
        """The tables as JSON (pairs as ``urgency/state`` keys)."""

        def pairs(c: Counter[tuple[str, str]]) -> dict[str, int]:
            return {f"{u}/{s}": n for (u, s), n in sorted(c.items())}

        return {
            "state": self.state,
            "spoc": self.spoc,
            "year": self.year,
            "sent": pairs(self.sent),
            "received": pairs(self.received),
            "answered_within_limit": pairs(self.within),
            "answered_late": pairs(self.late),
            "refusals": dict(sorted(self.refusals.items())),
            "deviations": {
                "delayed": dict(sorted(self.delayed.items())),
                "late": sum(self.late.values()),
                "overdue": self.overdue,
            },
        }


@dataclass
class _Request:
    urgency: str = "non-urgent"
    limit: int = 0
    received_at: int | None = None
    paused: int = 0
    asked_at: int | None = None
    requester: str = ""


def _ms(record: HandoverRecord | Mapping[str, Any]) -> tuple[str, str, str, str, str, str, int]:
    if isinstance(record, HandoverRecord):
        at = int(record.at.timestamp() * 1000)
        r = record
        return (
            r.event,
            r.actor,
            r.referral_id,
            r.from_party or "",
            r.to_party or "",
            r.reason or "",
            at,
        )
    at_value = record["at"]
    at = int(at_value.timestamp() * 1000) if isinstance(at_value, datetime) else int(at_value)
    return (
        str(record["event"]),
        str(record["actor"]),
        str(record["referral_id"]),
        str(record.get("from_party") or ""),
        str(record.get("to_party") or ""),
        str(record.get("reason") or ""),
        at,
    )


def art18(
    events: Iterable[HandoverRecord | Mapping[str, Any]], network: Network, year: int
) -> list[Art18]:
    """The Art. 18 tables of every SPOC's state for ``year``, from ledger events in ledger order."""
    country = {o.id: o.country for o in network.organisations}
    tables = {s: Art18(country[s], s, year) for s in spocs(network)}
    requests: dict[str, _Request] = defaultdict(_Request)
    for record in events:
        _count(_ms(record), tables, requests, country, year)
    return [tables[s] for s in sorted(tables, key=lambda s: country[s])]


def _count(
    ev: tuple[str, str, str, str, str, str, int],
    tables: dict[str, Art18],
    requests: dict[str, _Request],
    country: Mapping[str, str],
    year: int,
) -> None:
    event, actor, rid, from_party, to_party, reason, at = ev
    if not event.startswith("REQUEST_") or actor not in tables:
        return
    table, codes, req = tables[actor], _codes(reason), requests[rid]
    sender = actor == from_party
    if event == "REQUEST_SENT" and _year(at) == year:
        urgency = urgency_class(codes.get("urgent") == "1", codes.get("access", ""))
        table.sent[(urgency, country.get(to_party, "?"))] += 1
    elif event == "REQUEST_RECEIVED":
        req.urgency = urgency_class(codes.get("urgent") == "1", codes.get("access", ""))
        req.limit = limit_ms(codes.get("urgent") == "1", Access(codes.get("access", "INDIRECT")))
        req.received_at, req.requester = at, country.get(from_party, "?")
        if _year(at) == year:
            table.received[(req.urgency, req.requester)] += 1
    elif req.received_at is None or _year(req.received_at) != year:
        return
    elif event == "REQUEST_CLARIFICATION_ASKED" and sender:
        req.asked_at = at
    elif event == "REQUEST_CLARIFICATION_GIVEN" and not sender and req.asked_at is not None:
        req.paused += at - req.asked_at
        req.asked_at = None
    elif event == "REQUEST_ANSWERED" and sender:
        # Answered while a clarification is still pending: the open pause counts until now.
        pending = at - req.asked_at if req.asked_at is not None else 0
        due = req.received_at + req.limit + req.paused + pending
        (table.within if at <= due else table.late)[(req.urgency, req.requester)] += 1
    elif event == "REQUEST_REFUSED" and sender:
        table.refusals[codes.get("ground", "?")] += 1
    elif event == "REQUEST_DELAYED" and sender:
        table.delayed[codes.get("delay", "?")] += 1
    elif event == "REQUEST_OVERDUE":
        table.overdue += 1


def to_csv(tables: Iterable[Art18]) -> str:
    """The tables as CSV rows: state, year, table, key, count."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["state", "year", "table", "key", "count"])
    for t in tables:
        data = t.to_json()
        for name in ("sent", "received", "answered_within_limit", "answered_late", "refusals"):
            for key, n in data[name].items():
                writer.writerow([t.state, t.year, name, key, n])
        for key, n in data["deviations"]["delayed"].items():
            writer.writerow([t.state, t.year, "delayed", key, n])
        writer.writerow([t.state, t.year, "late", "", data["deviations"]["late"]])
        writer.writerow([t.state, t.year, "overdue", "", t.overdue])
    return out.getvalue()
