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
    """A HandoverEvent datum in Avro form."""
    return {
        "event_id": str(uuid.uuid4()),
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

    def emit(self, event: dict[str, Any]) -> FutureRecordMetadata:
        """Publish one event (asynchronously; flush the producer to wait)."""
        value = self._codec.encode(HANDOVER_EVENT, event)
        return self._producer.send(self.topic, key=str(event["referral_id"]).encode(), value=value)
