"""The drivers that feed sinks from Kafka, the same way for every kind.

:class:`SinkDriver` (the receiving side) consumes the organisation's referral
topics. For each record addressed to the organisation (its id is in the
``DESTINATION_ORGS`` header) it decodes the referral, hands it to every sink
that has not delivered it yet (the :class:`~connectors.inbox.Inbox` remembers),
then sends a RECEIVED status to status intake and a DELIVERED handover event.
A repeat is counted and answered with DUPLICATE_SKIPPED and another RECEIVED
(the first may have been lost; the origin's outbox ignores repeats). What
cannot be decoded goes to the dead-letter topic (stage ``SINK_DECODE``); what
the organisation's system finally refuses goes there too (stage ``DELIVER``)
and is not recorded as delivered. Offsets are committed only after the batch
is delivered and its receipts acknowledged (at-least-once).

:class:`StatusDriver` (the origin side) consumes ``status.to.<org>``: each
RECEIVED clears a destination in the outbox, and every status is handed to the
organisation's status sinks once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata
from opentelemetry.context import Context

from broker.config import Settings
from broker.errors import CodecError, DeliveryError, ReferralError, SecurityError
from broker.kafka import clients
from broker.kafka.deadletter import send_dead_letter
from broker.ledger.events import LedgerEmitter, handover_event
from broker.security.rules import ReceiverSecurity, stage_of
from broker.tracing import Tracing
from broker.wire.codec import Codec
from broker.wire.models import ReferralStatus, StatusUpdate, utc_now_ms
from broker.wire.registry import REFERRAL, STATUS_UPDATE
from broker.wire.topics import Headers, TopicNames
from connectors.base import Delivery, Sink, StatusDelivery, StatusSink, jsonable
from connectors.inbox import Inbox
from connectors.outbox import Outbox

__all__ = [
    "DriverStats",
    "SinkDriver",
    "StatusDriver",
    "StatusSender",
    "header_value",
    "status_key",
]

log = logging.getLogger("referral.connectors")

ConsumerFactory = Callable[..., KafkaConsumer]

#: The kind of sink a driver feeds (referral sinks or status sinks).
SinkT = TypeVar("SinkT", Sink, StatusSink)


def header_value(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """A record header as text, or None if absent."""
    for key, value in headers or ():
        if key == name:
            return (value or b"").decode("utf-8", "replace")
    return None


def status_key(status: Mapping[str, Any]) -> str:
    """Identity of a status update for de-duplication at the origin.

    A RECEIVED is the same receipt whenever it is repeated; any other status is
    one event, identified by who emitted it and when.
    """
    head = f"{status.get('referral_id')}|{status.get('emitted_by')}|{status.get('status')}"
    if status.get("status") == "RECEIVED":
        return head
    at = status.get("emitted_at")
    stamp = int(at.timestamp() * 1000) if isinstance(at, datetime) else at
    return f"{head}|{stamp}"


@dataclass
class DriverStats:
    """Counters of one driver's run."""

    records: int = 0
    delivered: int = 0
    duplicates: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    statuses: int = 0
    batches: int = 0


class StatusSender:
    """Encodes status updates and publishes them to status intake, keyed by referral id."""

    def __init__(
        self,
        producer: KafkaProducer,
        codec: Codec,
        names: TopicNames,
        tracing: Tracing | None = None,
    ) -> None:
        self.producer = producer
        self.codec = codec
        self.names = names
        self.tracing = tracing or Tracing(None, "status")

    def send(self, update: StatusUpdate, parent: Context | None = None) -> FutureRecordMetadata:
        """Publish one (validated) status update asynchronously, in the referral's trace."""
        value = self.codec.encode(STATUS_UPDATE, update.to_avro())
        headers = [
            (Headers.REFERRAL_ID, update.referral_id.encode()),
            (Headers.CASE_ID, update.case_id.encode()),
            (Headers.ORIGIN, update.origin_org.encode()),
        ]
        with self.tracing.send(
            self.names.status_intake,
            headers,
            parent=parent,
            attributes={
                "referral.id": update.referral_id,
                "referral.org": update.emitted_by,
                "referral.status": str(update.status),
            },
        ):
            return self.producer.send(
                self.names.status_intake,
                key=update.referral_id.encode(),
                value=value,
                headers=headers,
            )

    def received(
        self,
        org_id: str,
        referral_id: str,
        case_id: str,
        origin: str,
        parent: Context | None = None,
    ) -> FutureRecordMetadata:
        """Publish a RECEIVED receipt from ``org_id`` for one referral."""
        update = StatusUpdate(
            referral_id=referral_id,
            case_id=case_id,
            emitted_by=org_id,
            emitted_at=utc_now_ms(),
            status=ReferralStatus.RECEIVED,
            origin_org=origin,
        )
        return self.send(update, parent)


class _Driver(Generic[SinkT]):
    """Shared consumer plumbing: poll, process, flush, commit; stop on an Event.

    The driver owns its sinks' lifecycle: they are opened before the group is
    joined, flushed before each commit and flushed and closed after leaving.
    """

    name = "driver"

    def __init__(
        self,
        settings: Settings,
        org_id: str,
        codec: Codec,
        topics: Sequence[str],
        group_id: str,
        sinks: Sequence[SinkT],
        *,
        producer: KafkaProducer | None = None,
        consumer_factory: ConsumerFactory | None = None,
        poll_timeout_ms: int = 200,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing or Tracing(None, org_id)
        #: The trace context of the record being handled (parent of what it causes).
        self.current_context: Context | None = None
        self.org_id = org_id
        self.codec = codec
        self.names = settings.topic_names()
        self.topics = list(topics)
        self.group_id = group_id
        self.sinks: list[SinkT] = list(sinks)
        self.poll_timeout_ms = poll_timeout_ms
        self.stats = DriverStats()
        self._consumer_factory = consumer_factory or clients.consumer
        self._own_producer = producer is None
        self.producer = producer or clients.producer(settings, role=f"{self.name}-{org_id}")
        self.ledger = LedgerEmitter(self.producer, codec, self.names.ledger)
        self._consumer: KafkaConsumer | None = None

    def open(self) -> None:
        """Open every sink, then join the consumer group."""
        for sink in self.sinks:
            sink.open()
        self._consumer = self._consumer_factory(
            self.settings, *self.topics, group_id=self.group_id, role=f"{self.name}-{self.org_id}"
        )

    def close(self) -> None:
        """Leave the group and flush what is in flight, then flush and close every sink."""
        try:
            if self._consumer is not None:
                clients.close_consumer(self._consumer, self.name, log)
                self._consumer = None
            if self._own_producer:
                clients.close_producer(self.producer, self.name, log)
        finally:
            for sink in self.sinks:
                try:
                    sink.flush()
                finally:
                    sink.close()

    def run(self, stop: threading.Event) -> DriverStats:
        """Consume until ``stop`` is set; each batch is committed after it is handled."""
        if self._consumer is None:
            self.open()
        try:
            while not stop.is_set():
                self.poll_once()
        finally:
            self.close()
        return self.stats

    def poll_once(self) -> int:
        """One poll → handle → flush → commit cycle; returns the number of records."""
        assert self._consumer is not None
        batch = self._consumer.poll(timeout_ms=self.poll_timeout_ms)
        if not batch:
            return 0
        futures: list[FutureRecordMetadata] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        count = 0
        for tp, records in batch.items():
            for record in records:
                count += 1
                self.stats.records += 1
                with self.tracing.process(
                    record,
                    self.settings.topic_prefix + self.group_id,
                    attributes={"referral.org": self.org_id},
                ) as ctx:
                    self.current_context = ctx
                    self.handle(record, futures)
                self.current_context = None
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        self.after_batch()
        try:
            self.producer.flush(30)
        except KafkaError as exc:
            log.warning("%s flush failed: %s", self.name, type(exc).__name__)
        failed = sum(1 for f in futures if f.failed())
        if failed:
            # Delivered but the receipts were not acknowledged: the outbox of the
            # origin republishes, and the repeat is answered with another RECEIVED.
            log.warning("%s: %d of %d sends failed", self.name, failed, len(futures))
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("%s commit failed (will be redelivered): %s", self.name, type(exc).__name__)
        self.stats.batches += 1
        return count

    def handle(self, record: Any, futures: list[FutureRecordMetadata]) -> None:
        """Handle one consumed record (subclasses)."""
        raise NotImplementedError

    def after_batch(self) -> None:
        """Make every sink durable before the offsets are committed."""
        for sink in self.sinks:
            sink.flush()

    def dead_letter(
        self, record: Any, stage: str, exc: BaseException, futures: list[FutureRecordMetadata]
    ) -> None:
        """Send ``record`` intact to the dead-letter topic with the reason."""
        self.stats.dead_lettered += 1
        log.info(
            "%s dead-lettered %s[%d]@%d at %s: %s",
            self.org_id,
            record.topic,
            record.partition,
            record.offset,
            stage,
            type(exc).__name__,
        )
        futures.append(
            send_dead_letter(self.producer, self.names.deadletter, record, stage, exc, self.org_id)
        )
        referral_id = header_value(record.headers, Headers.REFERRAL_ID)
        if referral_id:
            self.event(
                "DEAD_LETTERED",
                referral_id,
                header_value(record.headers, Headers.CASE_ID) or "-",
                record,
                futures,
                reason=f"{stage}: {type(exc).__name__}",
            )

    def event(
        self,
        kind: str,
        referral_id: str,
        case_id: str,
        record: Any,
        futures: list[FutureRecordMetadata],
        *,
        from_party: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Emit one handover event about ``record``."""
        try:
            future = self.ledger.emit(
                handover_event(
                    kind,
                    referral_id=referral_id,
                    case_id=case_id or "-",
                    actor=self.org_id,
                    from_party=from_party,
                    to_party=self.org_id,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    reason=reason,
                )
            )
        except (CodecError, KafkaError) as exc:
            log.warning("ledger event not sent: %s", type(exc).__name__)
            return
        if future is not None:  # None: held for a batched ledger emitter
            futures.append(future)


class SinkDriver(_Driver[Sink]):
    """Feeds an organisation's sinks from its referral topics (group ``sink-<org>``)."""

    name = "sink"

    def __init__(
        self,
        settings: Settings,
        org_id: str,
        codec: Codec,
        topics: Sequence[str],
        sinks: Sequence[Sink],
        inbox: Inbox,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("group_id", f"sink-{org_id}")
        group_id = kwargs.pop("group_id")
        #: Verifies, opens and checks handling before delivery (None: no checks at all).
        self.security: ReceiverSecurity | None = kwargs.pop("security", None)
        super().__init__(settings, org_id, codec, topics, group_id, sinks, **kwargs)
        self.inbox = inbox
        self.status = StatusSender(self.producer, codec, self.names, self.tracing)

    def close(self) -> None:
        """Leave the group, flush and close every sink, then close the security checks."""
        try:
            super().close()
        finally:
            if self.security is not None:
                self.security.close()

    def handle(self, record: Any, futures: list[FutureRecordMetadata]) -> None:
        """Deliver one record addressed to this organisation (idempotently)."""
        orgs = header_value(record.headers, Headers.DESTINATION_ORGS)
        if orgs is None or self.org_id not in orgs.split(","):
            self.stats.skipped += 1
            return
        try:
            if self.security is not None:
                # Signature before decoding, then the sealed body and the handling rules.
                datum = self.security.receive(
                    self.codec, record.topic, record.value or b"", record.headers
                )
            else:
                _, datum = self.codec.decode(record.value or b"", expected=REFERRAL)
            envelope = datum["envelope"]
            referral_id = str(envelope["referral_id"])
            case_id = str(envelope["case_id"])
            origin = str(envelope["origin_org"])
        except SecurityError as exc:
            self.dead_letter(record, stage_of(exc), exc, futures)
            return
        except (CodecError, KeyError, TypeError) as exc:
            self.dead_letter(record, "SINK_DECODE", exc, futures)
            return
        delivery = Delivery(
            referral_id=referral_id,
            case_id=case_id,
            origin_org=origin,
            value=bytes(record.value),
            document=jsonable(datum),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            route_reason=header_value(record.headers, Headers.ROUTE_REASON) or "",
        )
        pending = [s for s in self.sinks if not self.inbox.has(referral_id, s.kind)]
        if not pending:
            self.stats.duplicates += 1
            self.inbox.count_duplicate(referral_id, self.sinks[0].kind if self.sinks else "")
            self.event(
                "DUPLICATE_SKIPPED", referral_id, case_id, record, futures, from_party=origin
            )
            self._receipt(referral_id, case_id, origin, futures)
            return
        delivered = []
        for sink in pending:
            try:
                sink.deliver(delivery)
            except DeliveryError as exc:
                self.dead_letter(record, "DELIVER", exc, futures)
                continue
            self.inbox.record(delivery, sink.kind)
            delivered.append(sink.kind)
        if delivered:
            self.stats.delivered += 1
            self.event(
                "DELIVERED",
                referral_id,
                case_id,
                record,
                futures,
                from_party=origin,
                reason=",".join(delivered),
            )
            self._receipt(referral_id, case_id, origin, futures)

    def _receipt(
        self, referral_id: str, case_id: str, origin: str, futures: list[FutureRecordMetadata]
    ) -> None:
        try:
            futures.append(
                self.status.received(
                    self.org_id, referral_id, case_id, origin, self.current_context
                )
            )
        except (ReferralError, KafkaError, ValueError) as exc:
            log.warning("RECEIVED for %s not sent: %s", referral_id, type(exc).__name__)


class StatusDriver(_Driver[StatusSink]):
    """Feeds an origin's outbox and status sinks from ``status.to.<org>``"""

    name = "status"

    def __init__(
        self,
        settings: Settings,
        org_id: str,
        codec: Codec,
        sinks: Sequence[StatusSink],
        outbox: Outbox,
        inbox: Inbox,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("group_id", f"status-{org_id}")
        group_id = kwargs.pop("group_id")
        names = settings.topic_names()
        super().__init__(settings, org_id, codec, [names.status(org_id)], group_id, sinks, **kwargs)
        self.outbox = outbox
        self.inbox = inbox

    def handle(self, record: Any, futures: list[FutureRecordMetadata]) -> None:
        """Clear the outbox on RECEIVED and hand the status to the status sinks once."""
        try:
            _, datum = self.codec.decode(record.value or b"", expected=STATUS_UPDATE)
            referral_id = str(datum["referral_id"])
            status = str(datum["status"])
            emitted_by = str(datum["emitted_by"])
        except (CodecError, KeyError, TypeError) as exc:
            self.dead_letter(record, "SINK_DECODE", exc, futures)
            return
        self.stats.statuses += 1
        if status == "RECEIVED":
            self.outbox.mark_received(referral_id, emitted_by)
        key = status_key(datum)
        if self.inbox.has_status(key):
            self.stats.duplicates += 1
            self.inbox.count_status_duplicate()
            return
        delivery = StatusDelivery(
            referral_id=referral_id,
            status=status,
            emitted_by=emitted_by,
            document=jsonable(datum),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        failed = False
        for sink in self.sinks:
            try:
                sink.deliver_status(delivery)
            except DeliveryError as exc:
                failed = True
                self.dead_letter(record, "DELIVER", exc, futures)
        if not failed:
            self.inbox.record_status(key, referral_id)
            self.stats.delivered += 1
