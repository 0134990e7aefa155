"""The ledger's batch form: a consumed batch's handover events packed in columns, encoded once."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from broker.errors import CorruptDatum
from broker.wire.codec import Codec
from broker.wire.models import HandoverEventType
from broker.wire.registry import HANDOVER_BATCH

__all__ = [
    "MAX_PACKED_EVENTS",
    "BatchWriter",
    "EventFacts",
    "event_datum",
    "event_id",
    "pack",
    "unpack",
]

_UNKNOWN_REFERRAL = "00000000-0000-0000-0000-000000000000"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS = frozenset(kind.value for kind in HandoverEventType)
#: The most events one packed record may expand to (a router batch has a few thousand).
MAX_PACKED_EVENTS = 100_000


class EventFacts(NamedTuple):
    """What one handover event says, before its id, its actor and its encoding."""

    kind: str
    referral_id: str
    case_id: str
    from_party: str | None
    to_party: str | None
    topic: str | None
    partition: int | None
    offset: int | None
    reason: str | None
    trace_id: str | None
    at_ms: int


def event_id(*parts: object) -> str:
    """The content-derived event id (a version-5-shaped UUID of a BLAKE2b digest)."""
    d = bytearray(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest())
    d[6] = (d[6] & 0x0F) | 0x50
    d[8] = (d[8] & 0x3F) | 0x80
    h = d.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_datum(
    actor: str,
    kind: str,
    referral_id: str,
    case_id: str,
    from_party: str | None,
    to_party: str | None,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    reason: str | None,
    trace_id: str | None,
    at: datetime | int,
    span_id: str | None = None,
) -> dict[str, Any]:
    """One HandoverEvent datum; the id is derived from the facts as given (raw).

    The one place a datum is built: listed events (:func:`handover_event`), the
    listed fallback of :class:`BatchWriter` and :func:`unpack` all use it.
    """
    # The id is derived from the facts as stored, so anyone can derive it again from them.
    referral_id = referral_id or _UNKNOWN_REFERRAL
    from_party, to_party = from_party or None, to_party or None
    return {
        "event_id": event_id(
            referral_id, kind, actor, from_party, to_party, topic, partition, offset, reason
        ),
        "referral_id": referral_id,
        "case_id": case_id or "unknown",
        "event": kind,
        "actor": actor,
        "from_party": from_party,
        "to_party": to_party,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": reason,
        "trace_id": trace_id,
        "span_id": span_id,
        "at": at,
    }


#: The fields of ``PackedHandovers``: the routes, then one column per event fact.
_COLUMNS = ("routes", "route", "referral_id", "case_id", "partition", "offset", "trace_id", "at")


def pack(events: Sequence[EventFacts]) -> dict[str, Any]:
    """The ``PackedHandovers`` datum of ``events`` (columns, routes listed once).

    Facts are stored as given (an empty party stays empty), so the ids derived on
    reading are the ids the listed form carries.
    """
    if not events:
        return {k: [] for k in _COLUMNS}
    kinds, rids, cids, froms, tos, topics, parts, offsets, reasons, traces, ats = zip(
        *events, strict=True
    )
    index: dict[tuple[Any, ...], int] = {}
    route = [
        index.setdefault(k, len(index))
        for k in zip(kinds, froms, tos, topics, reasons, strict=True)
    ]
    return {
        "routes": [
            {"event": k, "from_party": f, "to_party": t, "topic": tp, "reason": r}
            for k, f, t, tp, r in index
        ],
        "route": route,
        "referral_id": rids,
        "case_id": cids,
        "partition": [-1 if p is None else p for p in parts],
        "offset": [-1 if o is None else o for o in offsets],
        "trace_id": traces,
        "at": ats,
    }


def unpack(actor: str, packed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The HandoverEvent datums a decoded ``PackedHandovers`` stands for, in order.

    CorruptDatum when the columns do not line up, a route index is out of range,
    or there are more than :data:`MAX_PACKED_EVENTS` events.
    """
    routes = packed["routes"]
    route = packed["route"]
    n = len(route)
    if n > MAX_PACKED_EVENTS:
        raise CorruptDatum(f"packed handovers: {n} events (at most {MAX_PACKED_EVENTS})")
    columns = [packed[k] for k in _COLUMNS[2:]]
    if any(len(c) != n for c in columns):
        raise CorruptDatum("packed handovers: columns of unequal length")
    facts = [(r["event"], r["from_party"], r["to_party"], r["topic"], r["reason"]) for r in routes]
    out = []
    for r, rid, cid, part, off, trace, at in zip(route, *columns, strict=True):
        if not 0 <= r < len(facts):
            raise CorruptDatum(f"packed handovers: route {r} of {len(facts)}")
        kind, from_party, to_party, topic, reason = facts[r]
        try:
            when = _EPOCH + timedelta(milliseconds=at)
        except OverflowError:
            raise CorruptDatum(f"packed handovers: time {at} out of range") from None
        out.append(
            event_datum(
                actor,
                kind,
                rid,
                cid,
                from_party,
                to_party,
                topic,
                None if part < 0 else part,
                None if off < 0 else off,
                reason,
                trace,
                when,
            )
        )
    return out


class BatchWriter:
    """Encodes one actor's events as a framed ``HandoverBatch``, packed (no per-event dicts).

    ``packed`` is False when the registry's current HandoverBatch has no
    ``packed`` field (a registry behind this code): the events are then listed.
    """

    def __init__(self, codec: Codec, actor: str) -> None:
        self.codec = codec
        self.actor = actor
        schema = codec.registry.latest(HANDOVER_BATCH).schema
        self.packed = any(f.get("name") == "packed" for f in schema.get("fields", ()))

    def datum(self, facts: EventFacts) -> dict[str, Any]:
        """The HandoverEvent datum of one event (as :func:`handover_event` builds it)."""
        kind = HandoverEventType(facts.kind).value
        return event_datum(self.actor, kind, *facts[1:])

    def encode(self, events: Sequence[EventFacts]) -> bytes:
        """The framed HandoverBatch of ``events``: packed in columns, or listed."""
        if not self.packed:
            datums = [self.datum(e) for e in events]
            return self.codec.encode(HANDOVER_BATCH, {"actor": self.actor, "events": datums})
        for kind in {e.kind for e in events} - _KINDS:
            HandoverEventType(kind)  # ValueError, as for a listed event
        return self.codec.encode(
            HANDOVER_BATCH, {"actor": self.actor, "events": [], "packed": pack(events)}
        )
