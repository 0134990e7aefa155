"""The handover ledger: every hop of every referral, as ``HandoverEvent`` records.

Components emit events to the ledger topic with :class:`LedgerEmitter`; the
events name ids, organisations, topics, positions and reasons — never payload
content.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from broker.codec import Codec

__all__ = ["HANDOVER_EVENT", "LedgerEmitter", "handover_event"]

_EVENT_NS = uuid.UUID("6f0b7a52-3c1e-5d7a-9a51-0d4c0f2b7e11")

#: Record name of the ledger's schema.
HANDOVER_EVENT = "org.referralbroker.v1.HandoverEvent"


def handover_event(
    event: str,
    *,
    referral_id: str,
    case_id: str,
    actor: str,
    from_party: str | None = None,
    to_party: str | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    reason: str | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
    at_ms: int | None = None,
) -> dict[str, Any]:
    """A HandoverEvent datum in Avro form.

    The event id is derived from what the event says (referral, event, actor,
    parties, position, reason), so a redelivered hop yields the same id and the
    materialised ledger can recognise the repeat.
    """
    identity = "|".join(
        map(
            str, (referral_id, event, actor, from_party, to_party, topic, partition, offset, reason)
        )
    )
    return {
        "event_id": str(uuid.uuid5(_EVENT_NS, identity)),
        "referral_id": referral_id,
        "case_id": case_id,
        "event": event,
        "actor": actor,
        "from_party": from_party,
        "to_party": to_party,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": reason,
        "trace_id": trace_id,
        "span_id": span_id,
        "at": at_ms if at_ms is not None else int(time.time() * 1000),
    }


class LedgerEmitter:
    """Encodes handover events and publishes them to the ledger topic, keyed by referral id."""

    def __init__(self, producer: KafkaProducer, codec: Codec, topic: str) -> None:
        self._producer = producer
        self._codec = codec
        self.topic = topic

    def emit(self, event: dict[str, Any], partition: int | None = None) -> FutureRecordMetadata:
        """Publish one event (asynchronously; flush the producer to wait)."""
        value = self._codec.encode(HANDOVER_EVENT, event)
        key = str(event["referral_id"]).encode()
        return self._producer.send(self.topic, key=key, value=value, partition=partition)
