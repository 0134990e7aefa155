"""A pre-compiled writer of ``HandoverBatch`` records: the router's ledger, encoded once.

The router records one handover event per routed destination. Building a dict
per event and handing thousands of them to fastavro's generic writer cost more
than the routing itself, so the router holds each event as a plain
:class:`EventFacts` tuple and :class:`BatchWriter` writes the Avro binary of the
whole batch straight from them: the low-cardinality fields (actor, parties,
topic, reason) are encoded once and reused, the event id is derived as
:func:`broker.ledger.events.handover_event` derives it.

The bytes are exactly what ``Codec.encode(HANDOVER_BATCH, ...)`` writes: the
writer checks that against the codec on construction and falls back to the
codec (still without the per-event dicts on the hot path) if the registered
schema ever has another layout. Readers are unchanged.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

from broker.wire.codec import Codec
from broker.wire.models import HandoverEventType
from broker.wire.registry import HANDOVER_BATCH

__all__ = ["BatchWriter", "EventFacts", "event_id"]

_KINDS = list(HandoverEventType)
_KIND_INDEX = {kind.value: i for i, kind in enumerate(_KINDS)}
_UNKNOWN_REFERRAL = "00000000-0000-0000-0000-000000000000"


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


def _long(n: int) -> bytes:
    """Avro's zig-zag varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(s: str) -> bytes:
    b = s.encode()
    return _long(len(b)) + b


class BatchWriter:
    """Encodes one actor's events as a framed ``HandoverBatch``, without per-event dicts."""

    def __init__(self, codec: Codec, actor: str) -> None:
        self.codec = codec
        self.actor = actor
        self._header = codec.header_of(HANDOVER_BATCH)
        self._actor = _string(actor)
        #: encoded ``["null", "string"]`` values of low-cardinality fields
        self._opt: dict[str | None, bytes] = {None: b"\x00"}
        self._kinds = [_long(i) for i in range(len(_KINDS))]
        self.compiled = True
        sample = EventFacts(
            HandoverEventType.ROUTED.value,
            "5b1e7a4e-1d1c-4bde-9a8e-2f1f7a0b3c11",
            "case-1",
            "org-a",
            "org-b,org-c",
            "t",
            1,
            2**40,
            None,
            "0af7651916cd43dd8448eb211c80319c",
            1_700_000_000_000,
        )
        self.compiled = self._encode([sample]) == self._by_codec([sample])

    def datum(self, facts: EventFacts) -> dict[str, Any]:
        """The HandoverEvent datum of one event (as :func:`handover_event` builds it)."""
        kind = HandoverEventType(facts.kind).value
        return {
            "event_id": event_id(
                facts.referral_id,
                kind,
                self.actor,
                facts.from_party,
                facts.to_party,
                facts.topic,
                facts.partition,
                facts.offset,
                facts.reason,
            ),
            "referral_id": facts.referral_id or _UNKNOWN_REFERRAL,
            "case_id": facts.case_id or "unknown",
            "event": kind,
            "actor": self.actor,
            "from_party": facts.from_party or None,
            "to_party": facts.to_party or None,
            "topic": facts.topic,
            "partition": facts.partition,
            "offset": facts.offset,
            "reason": facts.reason,
            "trace_id": facts.trace_id,
            "span_id": None,
            "at": facts.at_ms,
        }

    def encode(self, events: list[EventFacts]) -> bytes:
        """The framed HandoverBatch of ``events`` (byte for byte the codec's encoding)."""
        return self._encode(events) if self.compiled else self._by_codec(events)

    def _by_codec(self, events: list[EventFacts]) -> bytes:
        datums = [self.datum(e) for e in events]
        return self.codec.encode(HANDOVER_BATCH, {"actor": self.actor, "events": datums})

    def _optional(self, value: str | None) -> bytes:
        out = self._opt.get(value)
        if out is None:
            assert value is not None  # None is always cached
            out = b"\x02" + _string(value)
            if len(self._opt) < 4096:  # parties, topics and reasons: a handful each
                self._opt[value] = out
        return out

    def _encode(self, events: list[EventFacts]) -> bytes:
        actor, opt, kinds = self.actor, self._optional, self._kinds
        parts = [self._header, self._actor]
        if events:
            parts.append(_long(len(events)))
        for e in events:
            kind = e.kind
            from_party, to_party = e.from_party or None, e.to_party or None
            eid = event_id(
                e.referral_id,
                kind,
                actor,
                e.from_party,
                e.to_party,
                e.topic,
                e.partition,
                e.offset,
                e.reason,
            )
            parts.append(b"\x48" + eid.encode())  # 36 characters
            parts.append(_string(e.referral_id or _UNKNOWN_REFERRAL))
            parts.append(_string(e.case_id or "unknown"))
            parts.append(kinds[_KIND_INDEX[kind]])
            parts.append(self._actor)
            parts.append(opt(from_party))
            parts.append(opt(to_party))
            parts.append(opt(e.topic))
            parts.append(b"\x00" if e.partition is None else b"\x02" + _long(e.partition))
            parts.append(b"\x00" if e.offset is None else b"\x02" + _long(e.offset))
            parts.append(opt(e.reason))
            parts.append(b"\x00" if e.trace_id is None else b"\x02" + _string(e.trace_id))
            parts.append(b"\x00")  # span_id
            parts.append(_long(e.at_ms))
        parts.append(b"\x00")
        out = b"".join(parts)
        self.codec.check_size(len(out))
        return out
