"""The router service: intake → jurisdiction topics, status intake → origin status topics.

For each intake record it decodes only the envelope, decides the destinations
(:func:`broker.routing.decide.decide`) and publishes the **original value bytes**
unchanged to each, keyed by referral id, with the original headers (trace
context, origin) plus the routing reason and the organisations meant to receive
it. Status updates are forwarded unchanged to the status topic of the
referral's origin. What cannot be decoded or routed goes to the dead-letter
topic with its original bytes; the partition keeps flowing.

Offsets are committed only after every publish of a batch is acknowledged
(at-least-once). A failed batch is not committed: the consumer seeks back and
the batch is tried again; downstream consumers are idempotent, so repeats are
harmless. ``stop`` (SIGTERM in ``referral route``) finishes the batch in hand,
commits what was published and returns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata
from opentelemetry.context import Context
from opentelemetry.trace import Link, get_current_span

from broker.config import Settings
from broker.errors import BrokerError, CodecError, ReferralError
from broker.kafka import clients
from broker.kafka.deadletter import send_dead_letter
from broker.ledger.events import LedgerEmitter, handover_event
from broker.network import Network
from broker.routing.decide import DecisionCache, status_destination
from broker.tracing import Tracing, trace_id_of
from broker.wire.codec import Codec
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers

__all__ = ["STATUS_UPDATE", "Router", "RouterStats"]

log = logging.getLogger("referral.router")

ACTOR = "router"
_ROUTE_HEADERS = frozenset({Headers.ROUTE_REASON, Headers.DESTINATION_ORGS})
_TRACE_HEADERS = frozenset({Headers.TRACEPARENT, Headers.TRACESTATE})


@dataclass
class RouterStats:
    """Counters of one router's run."""

    referrals: int = 0
    published: int = 0
    statuses: int = 0
    dead_lettered: int = 0
    batches: int = 0
    retried_batches: int = 0
    #: monotonic time the first batch arrived / the last batch was committed
    first_batch_at: float | None = None
    last_batch_at: float | None = None


class _BatchFailed(BrokerError):
    """Some publish of the batch was not acknowledged; the batch is not committed."""


def _kept_headers(headers: Sequence[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in headers or () if k not in _ROUTE_HEADERS]


class Router:
    """A member of the router consumer group (run several for scale-out)."""

    def __init__(
        self,
        settings: Settings,
        network: Network,
        codec: Codec,
        *,
        group_id: str = "router",
        consumer_factory: Callable[..., KafkaConsumer] | None = None,
        producer: KafkaProducer | None = None,
        poll_timeout_ms: int = 200,
        max_records: int = 2000,
        emit_ledger: bool = True,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.network = network
        self.codec = codec
        self.names = settings.topic_names()
        self.group_id = group_id
        self.poll_timeout_ms = poll_timeout_ms
        self.max_records = max_records
        self.stats = RouterStats()
        self.tracing = tracing or Tracing(None, ACTOR)
        self._consumer_factory = consumer_factory or clients.consumer
        self._producer = producer or clients.producer(settings, role="router")
        self._own_producer = producer is None
        self._ledger = (
            LedgerEmitter(self._producer, codec, self.names.ledger, batch=True, actor=ACTOR)
            if emit_ledger
            else None
        )
        self._consumer: KafkaConsumer | None = None
        self._partitions: dict[str, int] = {}
        self._decisions = DecisionCache(network, self.names)

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        """Join the router group on the intake and status-intake topics."""
        self._consumer = self._consumer_factory(
            self.settings, group_id=self.group_id, role="router", max_poll_records=self.max_records
        )
        self._consumer.subscribe(
            [self.names.intake, self.names.status_intake], listener=_AssignmentLog()
        )

    def close(self) -> None:
        """Leave the group and flush (nothing uncommitted is committed here)."""
        if self._consumer is not None:
            clients.close_consumer(self._consumer, ACTOR, log)
            self._consumer = None
        if self._own_producer:
            clients.close_producer(self._producer, ACTOR, log)

    def run(self, stop: threading.Event, *, idle_exit_s: float | None = None) -> RouterStats:
        """Route until ``stop`` is set (or, with ``idle_exit_s``, after that long idle)."""
        if self._consumer is None:
            self.open()
        assert self._consumer is not None
        last_work = time.monotonic()
        backoff = 0.2
        try:
            while not stop.is_set():
                try:
                    batch = self._consumer.poll(timeout_ms=self.poll_timeout_ms)
                except KafkaError as exc:
                    # Broker unreachable or group coordinator moving: wait and poll again.
                    log.warning("router poll failed, retrying: %s", type(exc).__name__)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if not batch:
                    if idle_exit_s is not None and time.monotonic() - last_work > idle_exit_s:
                        break
                    continue
                last_work = time.monotonic()
                try:
                    self.process_batch(batch)
                    backoff = 0.2
                except (_BatchFailed, KafkaError) as exc:
                    self.stats.retried_batches += 1
                    log.warning("router batch not acknowledged, retrying: %s", type(exc).__name__)
                    if self._ledger is not None:
                        self._ledger.discard_batch()
                    self._rewind(batch)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self.close()
        return self.stats

    # -- one batch -------------------------------------------------------------------
    def process_batch(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Route every record of ``batch``, wait for every ack, then commit its offsets."""
        assert self._consumer is not None
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.monotonic()
        futures: list[FutureRecordMetadata] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        intake, status_intake = self.names.intake, self.names.status_intake
        links: list[Link] = []
        for tp, records in batch.items():
            handler = self._route_referral if tp.topic == intake else self._route_status
            if tp.topic not in (intake, status_intake):
                continue
            for record in records:
                if self.tracing.enabled:
                    with self.tracing.process(record, self.group_id) as ctx:
                        links.append(Link(get_current_span().get_span_context()))
                        handler(record, futures, ctx)
                else:
                    handler(record, futures, None)
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        if self._ledger is not None:
            ledger_headers: list[tuple[str, bytes]] = []
            with self.tracing.send(self.names.ledger, ledger_headers, links=links[:128]):
                ledger_future = self._ledger.flush_batch(ledger_headers)
            if ledger_future is not None:
                futures.append(ledger_future)
        self._producer.flush()
        failed = [f for f in futures if f.failed()]
        if failed:
            raise _BatchFailed(
                f"{len(failed)} of {len(futures)} publishes failed "
                f"({type(failed[0].exception).__name__})"
            )
        self.stats.batches += 1
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            # Published but not committed: the next owner repeats them; consumers are idempotent.
            log.warning(
                "router commit failed (records will be redelivered): %s", type(exc).__name__
            )
        self.stats.last_batch_at = time.monotonic()

    def _rewind(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self._consumer is not None
        for tp, records in batch.items():
            # A partition revoked meanwhile: its new owner resumes from the commit.
            with contextlib.suppress(KafkaError, AssertionError, ValueError):
                self._consumer.seek(tp, records[0].offset)

    def _partition(self, topic: str, key_hash: int) -> int | None:
        """The default partitioner's choice for a key hash, without hashing again."""
        count = self._partitions.get(topic)
        if count is None:
            parts = self._producer.partitions_for(topic)
            if not parts:
                return None
            count = self._partitions[topic] = len(parts)
        return key_hash % count

    def _dead_letter(
        self,
        record: Any,
        stage: str,
        exc: ReferralError,
        futures: list[FutureRecordMetadata],
        referral_id: str | None = None,
    ) -> None:
        self.stats.dead_lettered += 1
        log.info(
            "dead-lettered %s[%d]@%d at %s: %s",
            record.topic,
            record.partition,
            record.offset,
            stage,
            type(exc).__name__,
        )
        futures.append(
            send_dead_letter(self._producer, self.names.deadletter, record, stage, exc, ACTOR)
        )
        if self._ledger is not None:
            rid = referral_id or _key_text(record.key)
            self._ledger.emit(
                handover_event(
                    "DEAD_LETTERED",
                    referral_id=rid,
                    case_id="",
                    actor=ACTOR,
                    topic=self.names.deadletter,
                    partition=record.partition,
                    offset=record.offset,
                    reason=f"{stage}: {type(exc).__name__}",
                )
            )

    def _send(
        self,
        topic: str,
        key: bytes,
        record: Any,
        headers: list[tuple[str, bytes]],
        ctx: Context | None,
        partition: int | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> FutureRecordMetadata:
        """Forward ``record``'s value; with tracing on, under a ``send <topic>`` span."""
        if ctx is None:
            return self._producer.send(
                topic, key=key, value=record.value, headers=headers, partition=partition
            )
        headers = [(k, v) for k, v in headers if k not in _TRACE_HEADERS]
        with self.tracing.send(topic, headers, parent=ctx, attributes=attrs):
            return self._producer.send(
                topic, key=key, value=record.value, headers=headers, partition=partition
            )

    def _route_referral(
        self, record: Any, futures: list[FutureRecordMetadata], ctx: Context | None
    ) -> None:
        self.stats.referrals += 1
        try:
            envelope = self.codec.decode_envelope(record.value or b"")
        except CodecError as exc:
            self._dead_letter(record, "ROUTE_DECODE", exc, futures)
            return
        referral_id = str(envelope.get("referral_id", ""))
        try:
            decision = self._decisions.decide(envelope)
        except ReferralError as exc:
            self._dead_letter(record, "ROUTE_DECIDE", exc, futures, referral_id)
            return
        key = referral_id.encode()
        # Hash the key once for every destination (same choice as the default partitioner).
        key_hash = murmur2(key) & 0x7FFFFFFF
        base = _kept_headers(record.headers)
        origin = str(envelope.get("origin_org", ""))
        case_id = str(envelope.get("case_id", ""))
        trace_id = trace_id_of(record.headers) if self._ledger is not None else None
        for dest in decision.destinations:
            orgs = ",".join(dest.orgs)
            headers = [
                *base,
                (Headers.ROUTE_REASON, dest.basis.encode()),
                (Headers.DESTINATION_ORGS, orgs.encode()),
            ]
            futures.append(
                self._send(
                    dest.topic,
                    key,
                    record,
                    headers,
                    ctx,
                    self._partition(dest.topic, key_hash),
                    {
                        "referral.id": referral_id,
                        "referral.origin": origin,
                        "referral.route.reason": dest.basis,
                        "referral.route.orgs": orgs,
                    },
                )
            )
            self.stats.published += 1
            if self._ledger is not None:
                self._ledger.emit(
                    handover_event(
                        "ROUTED",
                        referral_id=referral_id,
                        case_id=case_id,
                        actor=ACTOR,
                        from_party=origin,
                        to_party=orgs,
                        topic=dest.topic,
                        partition=record.partition,
                        offset=record.offset,
                        reason=dest.basis,
                        trace_id=trace_id,
                    )
                )

    def _route_status(
        self, record: Any, futures: list[FutureRecordMetadata], ctx: Context | None
    ) -> None:
        self.stats.statuses += 1
        try:
            _, status = self.codec.decode(record.value or b"", expected=STATUS_UPDATE)
            topic = status_destination(status, self.network, self.names)
        except ReferralError as exc:
            self._dead_letter(record, "STATUS_ROUTE", exc, futures)
            return
        referral_id = str(status.get("referral_id", ""))
        futures.append(
            self._send(
                topic,
                referral_id.encode(),
                record,
                _kept_headers(record.headers),
                ctx,
                attrs={
                    "referral.id": referral_id,
                    "referral.status": str(status.get("status", "")),
                },
            )
        )
        self.stats.published += 1
        if self._ledger is not None:
            self._ledger.emit(
                handover_event(
                    "STATUS_ROUTED",
                    referral_id=referral_id,
                    case_id=str(status.get("case_id", "")),
                    actor=ACTOR,
                    from_party=str(status.get("emitted_by", "")),
                    to_party=str(status.get("origin_org", "")),
                    topic=topic,
                    partition=record.partition,
                    offset=record.offset,
                    reason=str(status.get("status", "")),
                    trace_id=trace_id_of(record.headers),
                )
            )


class _AssignmentLog(ConsumerRebalanceListener):  # type: ignore[misc]
    """Logs each (re)assignment: which partitions this router owns now."""

    def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("router partitions revoked: %d", len(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        parts = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        log.info("router partitions assigned: %d %s", len(parts), " ".join(parts))


def _key_text(key: bytes | None) -> str:
    """The record key as a referral id if it is one, else ``""``."""
    try:
        return str(uuid.UUID(key.decode("ascii"))) if key else ""
    except (UnicodeDecodeError, ValueError):
        return ""
