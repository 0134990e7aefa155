"""The handover ledger: every hop of every referral, as ``HandoverEvent`` records."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from broker.errors import SchemaMismatch
from broker.kafka.healing import HealingProducer
from broker.kafka.partitioning import key_hash
from broker.ledger.batchwriter import BatchWriter, EventFacts, event_datum, unpack
from broker.wire.codec import Codec
from broker.wire.models import HandoverEventType
from broker.wire.registry import HANDOVER_BATCH, HANDOVER_EVENT

__all__ = [
    "HANDOVER_BATCH",
    "HANDOVER_EVENT",
    "EventFacts",
    "HandoverEventType",
    "LedgerEmitter",
    "Signer",
    "decode_events",
    "handover_event",
]

#: The referral id recorded when a record's own id could not be read.
UNKNOWN_REFERRAL = "00000000-0000-0000-0000-000000000000"


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
    """A HandoverEvent datum in Avro form; ``event`` is a :class:`HandoverEventType`.

    The event id is derived from what the event says (referral, event, actor,
    parties, position, reason), so a redelivered hop yields the same id and the
    materialised ledger can recognise the repeat.
    """
    kind = HandoverEventType(event).value  # ValueError on a kind the schema does not have
    at = at_ms if at_ms is not None else int(time.time() * 1000)
    return event_datum(
        actor,
        kind,
        referral_id,
        case_id,
        from_party,
        to_party,
        topic,
        partition,
        offset,
        reason,
        trace_id,
        at,
        span_id,
    )


#: Signs one ledger record: ``(value, number of events) -> signature headers`` ([]: unsigned);
#: :func:`broker.security.signing.ledger_signer` makes one from an actor's keys.
Signer = Callable[[bytes, int], list[tuple[str, bytes]]]


class LedgerEmitter:
    """Publishes handover events to the ledger topic, each record signed by its actor.

    With ``batch=False`` (default) each :meth:`emit` sends one ``HandoverEvent``
    keyed by referral id, signed on its own (a connector's). With ``batch=True``
    events are held until :meth:`flush_batch`, which sends them as one
    ``HandoverBatch`` keyed by the actor and signed once (the router's: one
    signature per consumed batch keeps public-key work off its hot path).
    Without a ``signer`` records go unsigned (only fit for networks that allow
    plain referrals: ``referral ledger verify`` refuses them otherwise).
    """

    def __init__(
        self,
        producer: KafkaProducer,
        codec: Codec,
        topic: str,
        *,
        batch: bool = False,
        actor: str = "",
        signer: Signer | None = None,
    ) -> None:
        self._producer = producer
        self._codec = codec
        self.topic = topic
        self.batch = batch
        self.actor = actor
        self.signer = signer
        self._pending: list[EventFacts | dict[str, Any]] = []
        self._writer = BatchWriter(codec, actor) if batch else None
        self._partitions: int | None = None

    def emit(self, event: dict[str, Any]) -> FutureRecordMetadata | None:
        """Publish one event (asynchronously; flush the producer to wait).

        Batched: the event is held for :meth:`flush_batch` (``hold`` is the cheap form).
        """
        if self.batch:
            self._pending.append(event)
            return None
        value = self._codec.encode(HANDOVER_EVENT, event)
        key = str(event["referral_id"]).encode()
        headers = self.signer(value, 1) if self.signer is not None else []
        return self._producer.send(self.topic, key=key, value=value, headers=headers)

    def hold(self, events: list[EventFacts]) -> None:
        """Add events to the held batch (``batch=True``: sent by :meth:`flush_batch`)."""
        self._pending.extend(events)

    def flush_batch(
        self, headers: list[tuple[str, bytes]] | None = None, *, wake: bool = True
    ) -> FutureRecordMetadata | None:
        """Send the held events as one HandoverBatch (None if there were none).

        ``wake=False``: the record does not wake the producer's sender; it goes out
        with the next flush (the next batch's publishes), one produce request fewer
        per consumed batch.
        """
        if not self._pending:
            return None
        events, self._pending = self._pending, []
        writer = self._writer
        assert writer is not None
        if all(isinstance(e, EventFacts) for e in events):
            value = writer.encode(events)  # type: ignore[arg-type]
        else:
            datums = [writer.datum(e) if isinstance(e, EventFacts) else e for e in events]
            value = self._codec.encode(HANDOVER_BATCH, {"actor": self.actor, "events": datums})
        signed = self.signer(value, len(events)) if self.signer is not None else []
        key, all_headers = self.actor.encode(), [*(headers or []), *signed]
        if not wake and isinstance(self._producer, HealingProducer):
            partition = self._partition(key)
            if partition is not None:
                return self._producer.send(
                    self.topic,
                    key=key,
                    value=value,
                    headers=all_headers,
                    partition=partition,
                    wake=False,
                )
        return self._producer.send(self.topic, key=key, value=value, headers=all_headers)

    def _partition(self, key: bytes) -> int | None:
        """The default partitioner's choice for ``key`` on the ledger topic (None: unknown)."""
        if self._partitions is None:
            self._partitions = len(self._producer.partitions_for(self.topic) or ())
        return key_hash(key) % self._partitions if self._partitions else None

    def discard_batch(self) -> None:
        """Drop held events (their batch was not published and will be redone)."""
        self._pending.clear()


def decode_events(codec: Codec, value: bytes) -> list[dict[str, Any]]:
    """The handover events in one ledger record (a single event or a batch)."""
    name, datum = codec.decode(value)
    if name == HANDOVER_EVENT:
        return [datum]
    if name == HANDOVER_BATCH:
        events = list(datum["events"])
        packed = datum.get("packed")
        if packed is not None:
            events += unpack(str(datum["actor"]), packed)
        return events
    raise SchemaMismatch(f"ledger record is a {name}, not a handover event")
