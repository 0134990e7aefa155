"""The operator's view of the ledger: one case's timeline and the network's flows.

Pure functions over handover records (as the ledger store returns them); no
Kafka, no files. :func:`trace` answers "how was this case handed over, by whom,
when, and where is it stuck?"; :func:`flows` gives the network at a glance.

What the components record (``handover_event`` callers):

* ``PUBLISHED`` / ``REPUBLISHED`` — the origin's publisher put the referral on
  the intake (``from_party`` = origin, ``to_party`` = the organisations it expects).
* ``ROUTED`` — the router handed it to a destination topic (``to_party`` = the
  organisations meant to receive it there, ``reason`` = the routing basis; an
  urgent-lane topic ends in ``.urgent``).
* ``DELIVERED`` / ``DUPLICATE_SKIPPED`` — a sink delivered it (or recognised a repeat).
* ``STATUS_SENT`` — an organisation sent a status by hand (``referral status``).
* ``STATUS_ROUTED`` — the router passed a status back to the origin
  (``from_party`` = the organisation that emitted it, ``reason`` = the status).
  The router checks nothing: this is transit, not proof.
* ``DELIVERED`` on ``status.to.<origin>`` by the origin — the origin verified a
  status (signature, and that its emitter is a recipient of the referral) and
  acted on it. Only these count as a receipt or a status in :func:`trace`,
  :func:`awaited` and :func:`flows`; the current status is the furthest one in
  the lifecycle (:func:`broker.lifecycle.current_status`), not the last to arrive.
* ``DEAD_LETTERED`` — the router or a sink could not handle the record.
* ``RESOLVED`` — a sink delivered a referral whose earlier delivery had failed
  for a while (an outage) and was dead-lettered: that dead letter is stale.
* ``AMENDED`` — the origin published a new version of the referral (``reason``
  ``version <n>``); a sink's DELIVERED of it ends in ``version <n>``.
* ``REROUTED`` — the origin re-referred a moved item in a child referral: on the
  parent ``item <id> moved to <CC>: referral <child id>``, on the child ``child of
  referral <parent id> (item <id>)`` (:mod:`broker.outcomes`).

A verified status with item outcomes has the reason ``<STATUS>; <summary>``
(``NTD_SENT; 3 items: 1 removed, 1 moved, 1 still online``: counts, not where items moved).

Output names ids, organisations, jurisdictions and topics only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from broker.errors import UnknownReferral
from broker.ledger.events import HandoverEventType
from broker.lifecycle import current_status
from broker.network import Deadlines
from broker.outcomes import Reroute, parse_reroute, split_status_reason
from broker.wire.models import ReferralStatus
from broker.wire.topics import TopicNames

__all__ = [
    "UNASSIGNED_COLUMN",
    "UNKNOWN_REFERRAL",
    "Awaited",
    "FlowTotals",
    "Flows",
    "HandoverRecord",
    "Hop",
    "RoleRoute",
    "RouteTimes",
    "Trace",
    "UnknownReferral",
    "awaited",
    "first_published",
    "flows",
    "percentile",
    "resolved_dead_letters",
    "role_routes",
    "trace",
]

#: The referral id the ledger records when a record's own id could not be read.
UNKNOWN_REFERRAL = "00000000-0000-0000-0000-000000000000"
#: The flows matrix column of referrals routed to the unassigned (fallback) topic.
UNASSIGNED_COLUMN = "unassigned"

_PUBLISHED = frozenset(
    {HandoverEventType.PUBLISHED, HandoverEventType.REPUBLISHED, HandoverEventType.AMENDED}
)


def _status(r: HandoverRecord) -> str:
    """The status of a verified status's DELIVERED reason (without the item outcome summary)."""
    return split_status_reason(r.reason)[0]


@dataclass(frozen=True)
class HandoverRecord:
    """One handover event as stored in the ledger (``at`` is tz-aware UTC)."""

    event_id: str
    referral_id: str
    case_id: str
    event: str
    actor: str
    at: datetime
    from_party: str | None = None
    to_party: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    reason: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    #: Position in the ledger chain (None for records not from the store).
    index: int | None = None

    @property
    def to_orgs(self) -> tuple[str, ...]:
        """The receiving organisations (``to_party`` is comma-separated)."""
        return tuple(p for p in (self.to_party or "").split(",") if p)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``at`` as ISO 8601)."""
        return {
            "index": self.index,
            "event_id": self.event_id,
            "referral_id": self.referral_id,
            "case_id": self.case_id,
            "event": self.event,
            "actor": self.actor,
            "from_party": self.from_party,
            "to_party": self.to_party,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason,
            "trace_id": self.trace_id,
            "at": self.at.isoformat(),
        }


def _order(records: Iterable[HandoverRecord]) -> list[HandoverRecord]:
    """By time, then ledger position (events of one batch share a millisecond)."""
    return sorted(records, key=lambda r: (r.at, r.index if r.index is not None else -1))


def _is_accepted_status(r: HandoverRecord, names: TopicNames) -> bool:
    """A status the origin verified and acted on (its own DELIVERED on its status topic)."""
    return (
        r.event == HandoverEventType.DELIVERED
        and bool(r.topic)
        and names.is_status(r.topic or "")
        and r.actor == r.to_party
        and bool(r.reason)
        and bool(r.from_party)
    )


def _is_received(r: HandoverRecord, org: str, names: TopicNames) -> bool:
    return (
        _is_accepted_status(r, names)
        and _status(r) == ReferralStatus.RECEIVED
        and r.from_party == org
    )


# -- one referral ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hop:
    """One step of a case's timeline."""

    record: HandoverRecord
    #: Time since the previous hop (None for the first).
    since_previous: timedelta | None
    #: The jurisdiction of the hop's topic, if it is a jurisdiction topic.
    jurisdiction: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = self.record.to_json()
        out["since_previous_s"] = (
            self.since_previous.total_seconds() if self.since_previous is not None else None
        )
        out["jurisdiction"] = self.jurisdiction
        return out


@dataclass(frozen=True)
class Awaited:
    """A destination organisation whose RECEIVED has not come back."""

    referral_id: str
    org: str
    topic: str
    jurisdiction: str | None
    urgent: bool
    routed_at: datetime
    due: datetime
    overdue: bool

    def late_by(self, now: datetime) -> timedelta:
        """How far past the deadline (zero if not yet due)."""
        return max(now - self.due, timedelta(0))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "referral_id": self.referral_id,
            "org": self.org,
            "topic": self.topic,
            "jurisdiction": self.jurisdiction,
            "urgent": self.urgent,
            "routed_at": self.routed_at.isoformat(),
            "due": self.due.isoformat(),
            "overdue": self.overdue,
        }


@dataclass(frozen=True)
class Trace:
    """A referral's timeline across organisations."""

    referral_id: str
    case_id: str
    origin: str | None
    hops: tuple[Hop, ...]
    #: The routing basis per destination topic, from ROUTED events.
    route_reasons: dict[str, str]
    #: The current status by lifecycle (of the verified ones), who emitted it and when.
    status: str | None
    status_by: str | None
    status_at: datetime | None
    #: Organisation → when the origin accepted its (verified) RECEIVED.
    received: dict[str, datetime]
    awaited: tuple[Awaited, ...]
    #: Organisation → its current status by lifecycle.
    statuses: dict[str, str] = field(default_factory=dict)
    #: Organisation → the item outcome summary of its latest verified status that had one.
    outcomes: dict[str, str] = field(default_factory=dict)
    #: Child referrals of moved items (item id, country, child referral id).
    children: tuple[Reroute, ...] = ()
    #: The re-referral this referral is (its parent and item), if it is one.
    parent: Reroute | None = None
    #: Versions the origin published after the first (from AMENDED events), in order.
    amendments: tuple[int, ...] = ()
    #: Every organisation that published or had routed a referral under this id, in
    #: order; more than one means the id was reused (or squatted by another member).
    origins: tuple[str, ...] = ()

    @property
    def overdue(self) -> tuple[Awaited, ...]:
        """The awaited destinations past their deadline."""
        return tuple(a for a in self.awaited if a.overdue)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "referral_id": self.referral_id,
            "case_id": self.case_id,
            "origin": self.origin,
            "origins": list(self.origins),
            "hops": [h.to_json() for h in self.hops],
            "route_reasons": dict(self.route_reasons),
            "status": self.status,
            "status_by": self.status_by,
            "status_at": self.status_at.isoformat() if self.status_at else None,
            "received": {org: at.isoformat() for org, at in sorted(self.received.items())},
            "awaited": [a.to_json() for a in self.awaited],
            "statuses": dict(sorted(self.statuses.items())),
            "outcomes": dict(sorted(self.outcomes.items())),
            "children": [
                {"referral_id": c.child_referral_id, "item_id": c.item_id, "country": c.country}
                for c in self.children
            ],
            "parent": (
                {"referral_id": self.parent.parent_referral_id, "item_id": self.parent.item_id}
                if self.parent
                else None
            ),
            "version": max((1, *self.amendments)),
        }


def _origin(records: Sequence[HandoverRecord]) -> str | None:
    found = _origins(records)
    return found[0] if found else None


def _origins(records: Sequence[HandoverRecord]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for r in records:
        if (r.event in _PUBLISHED or r.event == HandoverEventType.ROUTED) and r.from_party:
            seen.setdefault(r.from_party, None)
    return tuple(seen)


def awaited(
    records: Iterable[HandoverRecord],
    deadlines: Deadlines,
    names: TopicNames,
    now: datetime,
) -> tuple[Awaited, ...]:
    """Each destination organisation of one referral's ROUTED events still owing RECEIVED.

    The deadline runs from the first ROUTED event naming the organisation:
    ``urgent_receipt_hours`` when that was on an urgent lane, else ``receipt_hours``.
    """
    ordered = _order(records)
    first_routed: dict[str, HandoverRecord] = {}
    for r in ordered:
        if r.event == HandoverEventType.ROUTED and r.topic:
            for org in r.to_orgs:
                first_routed.setdefault(org, r)
    out = []
    for org, r in first_routed.items():
        if any(_is_received(x, org, names) for x in ordered):
            continue
        topic = r.topic or ""
        urgent = names.is_urgent(topic)
        hours = deadlines.urgent_receipt_hours if urgent else deadlines.receipt_hours
        due = r.at + timedelta(hours=hours)
        out.append(
            Awaited(
                referral_id=r.referral_id,
                org=org,
                topic=topic,
                jurisdiction=names.jurisdiction_of(topic),
                urgent=urgent,
                routed_at=r.at,
                due=due,
                overdue=now > due,
            )
        )
    return tuple(out)


def trace(
    records: Iterable[HandoverRecord],
    referral_id: str,
    deadlines: Deadlines,
    names: TopicNames,
    now: datetime,
) -> Trace:
    """The timeline of ``referral_id`` (UnknownReferral if the ledger has nothing on it)."""
    mine = _order(r for r in records if r.referral_id == referral_id)
    if not mine:
        raise UnknownReferral(f"no handover event for referral {referral_id} in the ledger")
    hops = _hops(mine, names)
    reasons = {
        r.topic: r.reason
        for r in mine
        if r.event == HandoverEventType.ROUTED and r.topic and r.reason
    }
    accepted = [r for r in mine if _is_accepted_status(r, names)]
    received, statuses, outcomes = _per_recipient(accepted)
    overall = current_status((_status(r), r.at) for r in accepted)
    status_by = None
    if overall is not None:
        status_by = next(
            r.from_party for r in accepted if (_status(r), r.at) == (overall[0].value, overall[1])
        )
    children, parent = _family(mine, referral_id)
    amendments = tuple(
        sorted(
            {
                int(r.reason.split()[-1])
                for r in mine
                if r.event == HandoverEventType.AMENDED
                and r.reason
                and r.reason.split()[-1].isdigit()
            }
        )
    )
    case_id = next((r.case_id for r in mine if r.case_id not in ("", "-", "unknown")), "")
    return Trace(
        referral_id=referral_id,
        case_id=case_id or mine[0].case_id,
        origin=_origin(mine),
        origins=_origins(mine),
        hops=tuple(hops),
        route_reasons=reasons,
        status=overall[0].value if overall else None,
        status_by=status_by,
        status_at=overall[1] if overall else None,
        received=received,
        awaited=awaited(mine, deadlines, names, now),
        statuses=statuses,
        outcomes=outcomes,
        children=children,
        parent=parent,
        amendments=amendments,
    )


def _hops(mine: Sequence[HandoverRecord], names: TopicNames) -> list[Hop]:
    """Each record as a hop, with the time since the one before and its jurisdiction."""
    hops = []
    previous: datetime | None = None
    for r in mine:
        hops.append(
            Hop(
                record=r,
                since_previous=(r.at - previous) if previous is not None else None,
                jurisdiction=names.jurisdiction_of(r.topic) if r.topic else None,
            )
        )
        previous = r.at
    return hops


def _per_recipient(
    accepted: Sequence[HandoverRecord],
) -> tuple[dict[str, datetime], dict[str, str], dict[str, str]]:
    """By recipient: when it answered RECEIVED, its current status, its items' summary."""
    received: dict[str, datetime] = {}
    by_org: dict[str, list[tuple[str, datetime]]] = {}
    outcomes: dict[str, str] = {}
    for r in accepted:
        org = r.from_party or ""
        status, summary = split_status_reason(r.reason)
        if status == ReferralStatus.RECEIVED:
            received.setdefault(org, r.at)
        by_org.setdefault(org, []).append((status, r.at))
        if summary:
            outcomes[org] = summary
    statuses: dict[str, str] = {}
    for org, updates in by_org.items():
        current = current_status(updates)
        if current is not None:
            statuses[org] = current[0].value
    return received, statuses, outcomes


def _family(
    mine: Sequence[HandoverRecord], referral_id: str
) -> tuple[tuple[Reroute, ...], Reroute | None]:
    """The child referrals of moved items, and the parent this one was re-referred from."""
    links = [
        link
        for r in mine
        if r.event == HandoverEventType.REROUTED
        and (link := parse_reroute(referral_id, r.reason)) is not None
    ]
    children = tuple(
        dict.fromkeys(x for x in links if x.parent_referral_id == referral_id and x.country)
    )
    parent = next((x for x in links if x.child_referral_id == referral_id), None)
    return children, parent


# -- the network -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation; None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must lie in [0, 100]: {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class RouteTimes:
    """Handover times on one route (origin organisation → destination column), in seconds."""

    origin: str
    destination: str
    referrals: int
    publish_to_deliver: tuple[float, ...]
    deliver_to_receive: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with p50/p95 of both handovers."""
        return {
            "origin": self.origin,
            "destination": self.destination,
            "referrals": self.referrals,
            "published_to_delivered": _summary(self.publish_to_deliver),
            "delivered_to_received": _summary(self.deliver_to_receive),
        }


def _summary(values: Sequence[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_s": percentile(values, 50), "p95_s": percentile(values, 95)}


@dataclass(frozen=True)
class FlowTotals:
    """Each referral counted once by its outcome: ``published`` = the sum of the rest.

    ``delivered``: delivered on a jurisdiction topic; ``dead_lettered``: not
    delivered anywhere and dead-lettered (undecodable records each count once);
    ``unassigned``: only routed to the unassigned topic; ``pending``: on its way.
    """

    published: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    unassigned: int = 0
    pending: int = 0

    def to_json(self) -> dict[str, int]:
        """A JSON-ready dict."""
        return {
            "published": self.published,
            "delivered": self.delivered,
            "dead_lettered": self.dead_lettered,
            "unassigned": self.unassigned,
            "pending": self.pending,
        }


@dataclass(frozen=True)
class Flows:
    """The network at a glance over the referrals first seen since ``since``."""

    since: datetime | None
    #: origin organisation → destination column (jurisdiction or ``unassigned``) → referrals.
    matrix: dict[str, dict[str, int]]
    routes: tuple[RouteTimes, ...]
    overdue: tuple[Awaited, ...]
    dead_letters: dict[str, int]
    totals: FlowTotals = field(default_factory=FlowTotals)

    @property
    def columns(self) -> list[str]:
        """The matrix columns: jurisdictions sorted, ``unassigned`` last, then other topics."""
        cols = {c for row in self.matrix.values() for c in row}
        juris = sorted(c for c in cols if len(c) == 2 and c.isupper())
        rest = sorted(cols - set(juris) - {UNASSIGNED_COLUMN})
        return juris + ([UNASSIGNED_COLUMN] if UNASSIGNED_COLUMN in cols else []) + rest

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "since": self.since.isoformat() if self.since else None,
            "columns": self.columns,
            "matrix": {o: dict(sorted(row.items())) for o, row in sorted(self.matrix.items())},
            "routes": [r.to_json() for r in self.routes],
            "overdue": [a.to_json() for a in self.overdue],
            "dead_letters": dict(sorted(self.dead_letters.items())),
            "totals": self.totals.to_json(),
        }


def _column(topic: str, names: TopicNames) -> str:
    if topic == names.unassigned:
        return UNASSIGNED_COLUMN
    return names.jurisdiction_of(topic) or (names.strip(topic) or topic)


def _outcome(records: Sequence[HandoverRecord], names: TopicNames) -> str:
    delivered = any(
        r.event == HandoverEventType.DELIVERED and r.topic and names.jurisdiction_of(r.topic)
        for r in records
    )
    if delivered:
        return "delivered"
    if any(r.event == HandoverEventType.DEAD_LETTERED for r in records):
        return "dead_lettered"
    if any(r.event == HandoverEventType.ROUTED and r.topic == names.unassigned for r in records):
        return "unassigned"
    return "pending"


def first_published(records: Sequence[HandoverRecord]) -> datetime | None:
    """When the referral was first put on the intake (None: no publication recorded).

    The earliest PUBLISHED / REPUBLISHED / AMENDED, never later than the first
    ROUTED or DELIVERED: a referral cannot be routed before it was published, so
    an origin whose clock runs ahead, or an older publisher that stamped PUBLISHED
    when the broker acknowledged (after the router and a sink may already have
    handled it), does not make a handover time negative.
    """
    publishes = [r.at for r in records if r.event in _PUBLISHED]
    if not publishes:
        return None
    first = min(publishes)
    handled = [
        r.at for r in records if r.event in (HandoverEventType.ROUTED, HandoverEventType.DELIVERED)
    ]
    return min(first, *handled) if handled else first


def flows(
    records: Iterable[HandoverRecord],
    deadlines: Deadlines,
    names: TopicNames,
    now: datetime,
    since: datetime | None = None,
) -> Flows:
    """Summarise every referral first seen at or after ``since`` (all if None)."""
    by_referral: dict[str, list[HandoverRecord]] = {}
    anonymous: list[HandoverRecord] = []
    for r in records:
        if r.referral_id == UNKNOWN_REFERRAL:
            if r.event == HandoverEventType.DEAD_LETTERED and (since is None or r.at >= since):
                anonymous.append(r)
            continue
        by_referral.setdefault(r.referral_id, []).append(r)

    matrix: dict[str, Counter[str]] = {}
    times: dict[tuple[str, str], tuple[set[str], list[float], list[float]]] = {}
    overdue: list[Awaited] = []
    dead: Counter[str] = Counter(_dead_reason(r) for r in anonymous)
    outcomes: Counter[str] = Counter({"dead_lettered": len(anonymous)})

    for rid, mine in by_referral.items():
        ordered = _order(mine)
        if since is not None and ordered[0].at < since:
            continue
        outcomes[_outcome(ordered, names)] += 1
        dead.update(_dead_reason(r) for r in ordered if r.event == HandoverEventType.DEAD_LETTERED)
        origin = _origin(ordered) or "unknown"
        published = first_published(ordered)
        columns_seen = set()
        for r in ordered:
            if r.event == HandoverEventType.ROUTED and r.topic:
                column = _column(r.topic, names)
                if column not in columns_seen:
                    columns_seen.add(column)
                    matrix.setdefault(origin, Counter())[column] += 1
                    times.setdefault((origin, column), (set(), [], []))[0].add(rid)
        for r in ordered:
            if r.event != HandoverEventType.DELIVERED or not r.topic or names.is_status(r.topic):
                continue
            key = (origin, _column(r.topic, names))
            entry = times.setdefault(key, (set(), [], []))
            if published is not None:
                entry[1].append((r.at - published).total_seconds())
            receipt = next((x for x in ordered if _is_received(x, r.actor, names)), None)
            if receipt is not None:
                entry[2].append((receipt.at - r.at).total_seconds())
        overdue.extend(a for a in awaited(ordered, deadlines, names, now) if a.overdue)

    totals = FlowTotals(
        published=sum(outcomes.values()),
        delivered=outcomes["delivered"],
        dead_lettered=outcomes["dead_lettered"],
        unassigned=outcomes["unassigned"],
        pending=outcomes["pending"],
    )
    routes = tuple(
        RouteTimes(origin, dest, len(ids), tuple(p2d), tuple(d2r))
        for (origin, dest), (ids, p2d, d2r) in sorted(times.items())
    )
    return Flows(
        since=since,
        matrix={o: dict(c) for o, c in matrix.items()},
        routes=routes,
        overdue=tuple(sorted(overdue, key=lambda a: a.due)),
        dead_letters=dict(dead),
        totals=totals,
    )


def _dead_reason(r: HandoverRecord) -> str:
    """The dead letter's stage and error class (the reason the emitters record)."""
    return r.reason or "unknown"


def resolved_dead_letters(
    letters: Iterable[tuple[str, str | None, str, str, int]], records: Iterable[HandoverRecord]
) -> set[str]:
    """Ids of dead letters a later delivery made stale.

    ``letters`` are ``(id, referral id, stage, actor, at_ms)``; a ``DELIVER`` dead
    letter is resolved once the same actor recorded ``RESOLVED`` for the same
    referral at or after it.
    """
    resolved: dict[tuple[str, str], float] = {}
    for r in records:
        if r.event == HandoverEventType.RESOLVED:
            key = (r.referral_id, r.actor)
            resolved[key] = max(resolved.get(key, 0.0), r.at.timestamp() * 1000)
    return {
        letter_id
        for letter_id, rid, stage, actor, at_ms in letters
        if rid is not None and stage == "DELIVER" and resolved.get((rid, actor), -1.0) >= at_ms
    }


@dataclass(frozen=True)
class RoleRoute:
    """How many referrals went from senders of one role to receivers of another, on a basis."""

    sender_role: str
    basis: str
    receiver_role: str
    referrals: int
    #: The organisation pairs seen on this route (``origin → receiver``), sorted.
    pairs: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "sender_role": self.sender_role,
            "basis": self.basis,
            "receiver_role": self.receiver_role,
            "referrals": self.referrals,
            "pairs": list(self.pairs),
        }


def role_routes(
    records: Iterable[HandoverRecord], role_of: Callable[[str], str | None]
) -> list[RoleRoute]:
    """The routing decisions of the ledger by role: who (by role) received what, on which basis.

    Read from the router's ROUTED events (``from_party`` the origin, ``to_party`` the
    receiving organisations, ``reason`` ``CC:BASIS``); each referral counts once per
    (sender role, basis, receiver role). ``role_of`` names an organisation's role
    (``Network.role_of``); organisations outside the network show as ``unknown``.
    """
    seen: set[tuple[str, str, str, str]] = set()
    counts: Counter[tuple[str, str, str]] = Counter()
    pairs: dict[tuple[str, str, str], set[str]] = {}
    for r in records:
        if r.event != HandoverEventType.ROUTED or not r.to_party:
            continue
        origin = r.from_party or "?"
        basis = (r.reason or "").partition(":")[2] or (r.reason or "?")
        sender = str(role_of(origin) or "unknown")
        for org in filter(None, r.to_party.split(",")):
            receiver = str(role_of(org) or "unknown")
            key = (sender, basis, receiver)
            pairs.setdefault(key, set()).add(f"{origin} → {org}")
            if (r.referral_id, *key) not in seen:
                seen.add((r.referral_id, *key))
                counts[key] += 1
    return [
        RoleRoute(s, b, rcv, n, tuple(sorted(pairs[(s, b, rcv)])))
        for (s, b, rcv), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
