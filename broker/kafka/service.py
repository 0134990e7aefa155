"""A consume-loop service: one group over topics, parts made durable before each commit.

The receiver's sink driver and the origin's status feed are such services.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from kafka import KafkaConsumer, KafkaProducer

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.loop import BatchContext, ConsumeLoop, LoopStats, RecordContext
from broker.ledger.events import LedgerEmitter, Signer
from broker.metrics import Metrics
from broker.tracing import Tracing
from broker.wire.codec import Codec

__all__ = ["ConsumerFactory", "Durable", "LoopService", "unique_events"]

log = logging.getLogger("referral.kafka.service")

ConsumerFactory = Callable[..., KafkaConsumer]


class Durable(Protocol):
    """A part a service feeds: opened once, flushed before each commit, closed at the end."""

    def open(self) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


PartT = TypeVar("PartT", bound=Durable)


def unique_events(batch: BatchContext) -> None:
    """Drop a record's repeated handover events (two sinks failing alike say the same thing).

    An event's id is derived from what it says, so a repeat inside one signed
    HandoverBatch would be one event to the ledger store but two to the signature.
    """
    for ctx in batch.records:
        if len(ctx.events) > 1:
            seen: set[tuple[Any, ...]] = set()
            unique = []
            for event in ctx.events:
                # What the event id is derived from (not the case id, trace or time).
                said = (
                    event.kind,
                    event.referral_id,
                    event.from_party,
                    event.to_party,
                    event.topic,
                    event.partition,
                    event.offset,
                    event.reason,
                )
                if said not in seen:
                    seen.add(said)
                    unique.append(event)
            ctx.events = unique


class LoopService(Generic[PartT]):
    """A consume loop over ``topics`` feeding parts (sinks) it opens, flushes before each
    commit and closes after leaving the group; subclasses handle the records."""

    name = "service"

    def __init__(
        self,
        settings: Settings,
        org_id: str,
        codec: Codec,
        topics: Sequence[str],
        group_id: str,
        sinks: Sequence[PartT],
        *,
        producer: KafkaProducer | None = None,
        consumer_factory: ConsumerFactory | None = None,
        poll_timeout_ms: int = 200,
        tracing: Tracing | None = None,
        signer: Signer | None = None,
        emit_ledger: bool = True,
        trace_records: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing or Tracing(None, org_id)
        self.org_id = org_id
        self.codec = codec
        self.names = settings.topic_names()
        self.topics = list(topics)
        self.group_id = group_id
        self.sinks: list[PartT] = list(sinks)
        self._consumer_factory = consumer_factory or clients.consumer
        self._own_producer = producer is None
        self.producer = producer or clients.producer(settings, role=self.role)
        self.loop = ConsumeLoop(
            self,
            consumer=self._subscribe,
            producer=self.producer,
            deadletter_topic=self.names.deadletter,
            actor=org_id,
            group=settings.topic_prefix + group_id,
            # One HandoverBatch per consumed batch, signed once, sent after the batch's
            # records are settled (the loop commits only once it is acknowledged).
            ledger=(
                LedgerEmitter(
                    self.producer, codec, self.names.ledger, batch=True, actor=org_id, signer=signer
                )
                if emit_ledger
                else None
            ),
            # ``trace_records`` False: no tracing middleware, trace headers forwarded untouched.
            tracing=self.tracing if trace_records else None,
            metrics=metrics.loop(self.role, settings.topic_prefix + group_id) if metrics else None,
            poll_timeout_ms=poll_timeout_ms,
        )
        self.stats: LoopStats = self.loop.stats
        if metrics is not None and metrics.enabled:
            # The lag's partition ends, asked at each scrape by one group-less consumer
            # of the process (the first service's factory makes it).
            metrics.probe_ends_with(
                lambda: self._consumer_factory(
                    self.settings,
                    group_id=None,
                    role="metrics-lag",
                    max_partition_fetch_bytes=1,
                    # Only the fetch's high watermark is used: no CRC over the batch it returns.
                    check_crcs=False,
                )
            )

    @property
    def role(self) -> str:
        """The client role its producer and consumer are named by (``<name>-<org>``)."""
        return f"{self.name}-{self.org_id}"

    def _subscribe(self) -> KafkaConsumer:
        return self._consumer_factory(
            self.settings, *self.topics, group_id=self.group_id, role=self.role
        )

    def open(self) -> None:
        """Open every sink, then join the consumer group."""
        for sink in self.sinks:
            sink.open()
        self.loop.open()

    def close(self) -> None:
        """Leave the group and flush what is in flight, then flush and close every sink."""
        try:
            self.loop.close()
            if self._own_producer:
                clients.close_producer(self.producer, self.name, log)
        finally:
            for sink in self.sinks:
                try:
                    sink.flush()
                finally:
                    sink.close()

    def run(self, stop: threading.Event, *, idle_exit_s: float | None = None) -> LoopStats:
        """Consume until ``stop`` is set (or ``idle_exit_s`` idle); each batch is committed
        once its fate is acked."""
        if self.loop.consumer is None:
            self.open()
        try:
            return self.loop.run(stop, idle_exit_s=idle_exit_s)
        finally:
            self.close()

    def poll_once(self) -> int:
        """One poll → handle → flush → commit cycle; returns the number of records."""
        return self.loop.poll_once()

    def step(self, stop: threading.Event) -> int:
        """One cycle after the loop's current backoff (interrupted by ``stop``)."""
        return self.loop.step(stop)

    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Handle one consumed record (subclasses)."""
        raise NotImplementedError

    def before_commit(self, batch: BatchContext) -> None:
        """Make every sink durable before the offsets are committed."""
        for sink in self.sinks:
            sink.flush()
        unique_events(batch)
