"""The one consume loop: poll → handle → make durable → wait for every ack → commit."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata
from opentelemetry.context import Context
from opentelemetry.trace import Link, get_current_span

from broker.kafka.deadletter import DeadLetterStage, send_dead_letter, send_dead_letter_reference
from broker.kafka.tally import DeadLetterTally
from broker.ledger.events import EventFacts, LedgerEmitter, handover_event
from broker.metrics import LoopMetrics
from broker.tracing import Tracing, trace_id_of
from broker.wire.models import HandoverEventType
from broker.wire.topics import Headers, header

__all__ = [
    "GC_THRESHOLDS",
    "BatchContext",
    "ConsumeLoop",
    "Handler",
    "LoopStats",
    "Middleware",
    "RecordContext",
    "tracing_middleware",
    "tune_gc",
]

log = logging.getLogger("referral.loop")

#: Errors after which resending the same record can never succeed.
_UNSENDABLE: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
)


@dataclass
class LoopStats:
    """Counters of one consumer's run (router, sink driver or status feed alike)."""

    records: int = 0
    referrals: int = 0
    statuses: int = 0
    published: int = 0
    delivered: int = 0
    duplicates: int = 0
    #: referrals the organisation's system refused for good (answered with REJECTED)
    refused: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    #: of those, unattributable: counted in one summary event per batch, none of their own
    dead_lettered_unrecorded: int = 0
    dead_lettered_by_reference: int = 0
    batches: int = 0
    retried_batches: int = 0
    redelivered_records: int = 0
    commit_failures: int = 0
    #: seconds spent in each step of the cycle, summed over the run (where the time goes)
    poll_s: float = 0.0
    handle_s: float = 0.0
    durable_s: float = 0.0
    ack_wait_s: float = 0.0
    commit_s: float = 0.0
    #: monotonic time the first batch arrived / the last batch was committed
    first_batch_at: float | None = None
    last_batch_at: float | None = None


#: The collector's thresholds for a process that runs consume loops (see :func:`tune_gc`).
GC_THRESHOLDS = (50_000, 20, 10)
_gc_tuned = False


def tune_gc() -> None:
    """Collect garbage less often in a process that streams records (once per process).

    Every record leaves a few dozen short-lived containers behind (the consumer's
    record, the decoded envelope, futures, headers), almost none of them in
    cycles. Python's default first threshold (700 allocations) collects every
    few dozen records, and each older-generation collection walks every
    long-lived object of the process. Here the objects made while starting up
    (modules, clients, caches) are frozen out of collection and the first
    threshold is raised to 50,000: a cycle still gets collected, a few thousand
    records later (bench/RESULTS.md measures both the speed and the flat memory).
    """
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    if gc.get_threshold()[0] < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)


class _NotAcknowledged(Exception):
    """A send still unanswered when the loop stopped waiting."""


class _Failed:
    """A send that raised before it was queued: an already-failed future."""

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc

    is_done = True

    def failed(self) -> bool:
        return True

    def succeeded(self) -> bool:
        return False


_Future: TypeAlias = FutureRecordMetadata | _Failed


@dataclass
class _Pending:
    """A handled batch whose ledger record is still in flight: committed once it is acked."""

    polled: dict[TopicPartition, list[Any]]
    offsets: dict[TopicPartition, OffsetAndMetadata]
    futures: list[_Future]
    rewound: bool


def _unsendable(exc: BaseException | None) -> bool:
    return isinstance(exc, _UNSENDABLE)


class RecordContext:
    """What a handler may do about one record: send, dead-letter, and see its trace.

    Everything sent through the context becomes part of the record's fate: the
    record's offset is committed only when all of it is acknowledged.
    """

    __slots__ = (
        "batch",
        "dead_lettered",
        "events",
        "futures",
        "loop",
        "record",
        "settled_late",
        "trace",
        "unrecorded",
    )

    def __init__(self, loop: ConsumeLoop, batch: BatchContext, record: Any) -> None:
        self.loop = loop
        self.batch = batch
        self.record = record
        #: The record's trace context (parent of what the handler causes); set by middleware.
        self.trace: Context | None = None
        self.futures: list[_Future] = []
        #: Handover events held for a batched ledger (sent once the record's fate is settled).
        self.events: list[EventFacts] = []
        self.dead_lettered = False
        #: Given up on after the first acks (its events are only its dead letter's).
        self.settled_late = False
        #: Dead-lettered without an event of its own: (stage, error class) for the summary.
        self.unrecorded: tuple[str, str] | None = None

    @property
    def producer(self) -> KafkaProducer:
        """The loop's producer (for senders that build their own records)."""
        return self.loop.producer

    def track(self, send: Callable[[], FutureRecordMetadata | None]) -> None:
        """Run one producer call; its acknowledgement becomes part of the record's fate."""
        try:
            future = send()
        except Exception as exc:  # the client refused it before queueing: a failed send
            self.futures.append(_Failed(exc))
            return
        if future is not None:  # None: held for a batched send (see BatchContext)
            self.futures.append(future)

    def send(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        """Publish one record because of this one."""
        # What track() does, without a closure per record (the router's hot path).
        try:
            future = self.loop.producer.send(
                topic, key=key, value=value, headers=headers or [], partition=partition
            )
        except Exception as exc:  # the client refused it before queueing: a failed send
            self.futures.append(_Failed(exc))
            return
        if future is not None:
            self.futures.append(future)
        produced = self.loop._produced
        if produced is not None:  # metrics on: counted per topic, added once per batch
            produced[topic] = produced.get(topic, 0) + 1

    def event(
        self,
        kind: HandoverEventType,
        referral_id: str,
        case_id: str | None,
        *,
        from_party: str | None = None,
        to_party: str | None = None,
        topic: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Record one handover event about this record in the ledger (part of its fate).

        The position is the consumed record's; ``topic`` defaults to its topic.
        """
        ledger = self.loop.ledger
        if ledger is None:
            return
        record = self.record
        if ledger.batch:
            # Plain facts; the batch is encoded once, after the acks (no per-event dict).
            self.events.append(
                EventFacts(
                    kind.value
                    if type(kind) is HandoverEventType
                    else HandoverEventType(kind).value,
                    referral_id,
                    case_id or "-",
                    from_party,
                    to_party,
                    topic or record.topic,
                    record.partition,
                    record.offset,
                    reason,
                    trace_id_of(record.headers),
                    int(time.time() * 1000),
                )
            )
            return
        datum = handover_event(
            kind,
            referral_id=referral_id,
            case_id=case_id or "-",
            actor=self.loop.actor,
            from_party=from_party,
            to_party=to_party,
            topic=topic or record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            trace_id=trace_id_of(record.headers),
        )
        self.track(lambda: ledger.emit(datum))

    def dead_letter(
        self,
        stage: str,
        exc: BaseException,
        referral_id: str | None = None,
        *,
        recorded: bool = True,
    ) -> None:
        """Send the record intact to the dead-letter topic with the reason, and say so.

        The ledger records ``DEAD_LETTERED`` under ``referral_id`` (else the
        record's referral-id header, else its key if that is a referral id).
        ``recorded=False`` (a record nobody can be held to: unsigned, badly signed,
        undecodable): no event of its own, it is counted in the batch's summary
        event instead (:mod:`broker.kafka.tally`; needs a batched ledger).
        """
        record = self.record
        self.dead_lettered = True
        self.loop.stats.dead_lettered += 1
        if self.loop.metrics is not None:
            self.loop.metrics.record_dead_lettered(record.topic, stage, type(exc).__name__)
        log.info(
            "%s dead-lettered %s[%d]@%d at %s: %s",
            self.loop.actor,
            record.topic,
            record.partition,
            record.offset,
            stage,
            type(exc).__name__,
        )
        self.track(
            lambda: send_dead_letter(
                self.loop.producer,
                self.loop.deadletter_topic,
                record,
                stage,
                exc,
                self.loop.actor,
            )
        )
        ledger = self.loop.ledger
        if not recorded and ledger is not None and ledger.batch:
            self.unrecorded = (stage, type(exc).__name__)
            return
        self.unrecorded = None
        self._dead_letter_event(stage, exc, referral_id)

    def _dead_letter_event(
        self, stage: str, exc: BaseException, referral_id: str | None = None
    ) -> None:
        headers = self.record.headers
        self.event(
            HandoverEventType.DEAD_LETTERED,
            referral_id or header(headers, Headers.REFERRAL_ID) or _key_id(self.record.key),
            header(headers, Headers.CASE_ID),
            reason=f"{stage}: {type(exc).__name__}",
        )

    def failure(self) -> BaseException | None:
        """The first send that was not acknowledged (None: every send was)."""
        for future in self.futures:
            if not future.is_done or future.failed():
                exc: BaseException = future.exception or _NotAcknowledged()
                return exc
        return None


@dataclass
class BatchContext:
    """One polled batch: its records' contexts, sends that belong to the whole batch, links."""

    loop: ConsumeLoop
    records: list[RecordContext] = field(default_factory=list)
    futures: list[_Future] = field(default_factory=list)
    #: Links to each record's process span (a batch-level send may carry them).
    links: list[Link] = field(default_factory=list)
    #: Records of the batch given up on (dead-lettered by reference or whole) after the acks.
    given_up: int = 0

    def track(self, send: Callable[[], FutureRecordMetadata | None]) -> None:
        """Run one producer call that belongs to the whole batch (e.g. a ledger batch)."""
        try:
            future = send()
        except Exception as exc:
            self.futures.append(_Failed(exc))
            return
        if future is not None:
            self.futures.append(future)


class Handler(Protocol):
    """What a consumer does with each record; the loop decides the record's fate."""

    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Handle one record; send what it causes through ``ctx``. Must not block long."""

    def before_commit(self, batch: BatchContext) -> None:
        """Make the batch durable (flush sinks, send batch-level records) before any commit."""


#: A middleware wraps ``handle``: ``middleware(record, ctx, call_next)``.
Middleware = Callable[[Any, RecordContext, Callable[[Any, RecordContext], None]], None]


def tracing_middleware(
    tracing: Tracing, group: str, attributes: dict[str, Any] | None = None
) -> Middleware:
    """A ``process <topic>`` CONSUMER span around each ``handle``, linked from the batch."""

    def middleware(
        record: Any, ctx: RecordContext, call_next: Callable[[Any, RecordContext], None]
    ) -> None:
        with tracing.process(record, group, attributes=attributes) as trace_ctx:
            ctx.trace = trace_ctx
            if tracing.enabled:
                ctx.batch.links.append(Link(get_current_span().get_span_context()))
            call_next(record, ctx)

    return middleware


class ConsumeLoop:
    """Polls a consumer group and runs every record through one handler, at least once.

    ``consumer`` is a factory called once on :meth:`open` (inject a real client
    pointed at a test broker); ``producer`` is shared by everything the handler
    sends. The loop owns neither the handler's resources nor the producer.
    With ``tracing``, every ``handle`` runs inside a ``process <topic>`` span
    (its context is ``ctx.trace``); with ``ledger``, handlers record handover
    events through ``ctx.event`` and a batched ledger is sent once per batch,
    linked to every record's span, after the handler's ``before_commit``.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        consumer: Callable[[], KafkaConsumer],
        producer: KafkaProducer,
        deadletter_topic: str,
        actor: str,
        group: str = "",
        ledger: LedgerEmitter | None = None,
        tracing: Tracing | None = None,
        metrics: LoopMetrics | None = None,
        stats: LoopStats | None = None,
        middlewares: Sequence[Middleware] = (),
        poll_timeout_ms: int = 200,
        flush_timeout_s: float = 30.0,
        max_attempts: int = 5,
        max_backoff_s: float = 5.0,
        pipeline_ledger: bool = True,
        gc_tuning: bool = True,
        async_commit: bool = True,
        commit_interval_s: float = 0.1,
    ) -> None:
        self.handler = handler
        #: Send commits without waiting for their answer (see :meth:`_commit`).
        self.async_commit = async_commit
        #: With ``async_commit``, one commit at most this often while records flow.
        self.commit_interval_s = commit_interval_s
        #: The latest acknowledged offset of each partition (committed and awaited on close)
        self._last_offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        self._unsent_commits: dict[TopicPartition, OffsetAndMetadata] = {}
        self._last_commit_at = 0.0
        #: Tune the process's garbage collector on :meth:`open` (:func:`tune_gc`).
        self.gc_tuning = gc_tuning
        self.producer = producer
        self.deadletter_topic = deadletter_topic
        self.actor = actor
        self.group = group
        self.ledger = ledger
        self.tracing = tracing
        #: Counters and histograms of this loop (None: metrics off, no cost).
        self.metrics = metrics
        #: Per partition: the offset after the last record read, the first offset read
        #: (where the loop started) and the last acknowledged offset (what :meth:`lag` counts).
        self._read_end: dict[TopicPartition, int] = {}
        self._read_start: dict[TopicPartition, int] = {}
        self._acked: dict[TopicPartition, int] = {}
        #: Rejoins of the consumers this loop closed (a closed one takes its count along).
        self._past_rejoins = 0
        #: Records sent in the batch by topic (metrics on; counted once per batch).
        self._produced: dict[str, int] | None = {} if metrics is not None else None
        self.stats = stats or LoopStats()
        self.poll_timeout_ms = poll_timeout_ms
        self.flush_timeout_s = flush_timeout_s
        self.max_attempts = max_attempts
        self.max_backoff_s = max_backoff_s
        self._consumer_factory = consumer
        self.consumer: KafkaConsumer | None = None
        chain = list(middlewares)
        if tracing is not None:
            chain.insert(0, tracing_middleware(tracing, group))
        self._call = self._chain(chain)
        #: (topic, partition, offset) → handlings that did not get acknowledged
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._backoff = 0.0
        #: Wait for a batch's ledger record's ack during the next poll (see :meth:`poll_once`).
        self.pipeline_ledger = pipeline_ledger
        self._pending: _Pending | None = None
        if metrics is not None:
            metrics.watch(self)

    # -- lifecycle ---------------------------------------------------------------------
    def open(self) -> None:
        """Create the consumer (it joins its group on the first poll); tune the collector."""
        if self.consumer is None:
            self.consumer = self._consumer_factory()
            if self.gc_tuning:
                tune_gc()

    def close(self) -> None:
        """Settle the batch whose ledger record is in flight, then leave the group.

        Nothing unacknowledged is committed here.
        """
        if self.consumer is not None:
            self._finish_pending()
            if self._last_offsets:
                self._commit_last()
            from broker.kafka.clients import close_consumer

            self._past_rejoins += int(getattr(self.consumer, "rejoins", 0))
            close_consumer(self.consumer, self.actor, log)
            self.consumer = None
            self._read_end, self._read_start, self._acked = {}, {}, {}

    def run(self, stop: threading.Event, *, idle_exit_s: float | None = None) -> LoopStats:
        """Consume until ``stop`` is set (or, with ``idle_exit_s``, after that long idle)."""
        self.open()
        last_work = time.monotonic()
        try:
            while not stop.is_set():
                count = self.step(stop)
                if count:
                    last_work = time.monotonic()
                elif idle_exit_s is not None and time.monotonic() - last_work > idle_exit_s:
                    break
        finally:
            self.close()
        return self.stats

    def step(self, stop: threading.Event) -> int:
        """Wait out the current backoff (interrupted by ``stop``), then :meth:`poll_once`."""
        if self._backoff and stop.wait(self._backoff):
            return 0
        return self.poll_once()

    # -- one batch ---------------------------------------------------------------------
    def poll_once(self) -> int:
        """One poll → handle → durable → acks → commit cycle; returns the records polled."""
        self.open()
        assert self.consumer is not None
        stats = self.stats
        t0 = time.perf_counter()
        try:
            polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms)
        except KafkaError as exc:
            # Broker unreachable or coordinator moving: poll again after a backoff.
            log.warning("%s poll failed, retrying: %s", self.actor, type(exc).__name__)
            self._grow_backoff()
            return 0
        finally:
            t1 = time.perf_counter()
            stats.poll_s += t1 - t0
        pending, self._pending = self._pending, None
        if not polled and pending is None and getattr(self.consumer, "starved", False):
            # Assigned nothing from topics that have partitions: join again, as a new member.
            self.close()
            return 0
        if not polled:
            if pending is not None and self._pending_acked(pending, None):
                self._commit_pending(pending)
            if self._unsent_commits:
                self._send_commits()  # idle: what is acknowledged gets committed now
            return 0
        if stats.first_batch_at is None:
            stats.first_batch_at = time.monotonic()
        batch = BatchContext(self)
        try:
            self._run_batch(batch, polled, pending, t1)
        finally:
            # A record's context and its batch refer to each other: emptying the batch's
            # side lets reference counting free a handled batch at once, instead of the
            # garbage collector finding the cycle (and the batch's records) later.
            batch.records = []
        return sum(len(r) for r in polled.values())

    def _run_batch(
        self,
        batch: BatchContext,
        polled: dict[TopicPartition, list[Any]],
        pending: _Pending | None,
        t1: float,
    ) -> None:
        """Handle a polled batch, make it durable, wait for its acks and commit (or rewind)."""
        stats = self.stats
        metrics = self.metrics
        if metrics is not None:
            self._note_read(polled)
        for records in polled.values():
            for record in records:
                stats.records += 1
                ctx = RecordContext(self, batch, record)
                try:
                    self._call(record, ctx)
                except Exception as exc:
                    # A handler bug must not stop the partition or lose the record.
                    log.exception("%s handler failed on %s", self.actor, _where(record))
                    ctx.dead_letter(DeadLetterStage.HANDLER, exc)
                batch.records.append(ctx)
        t2 = time.perf_counter()
        if metrics is not None:
            self._count_batch(metrics, polled)
        durable = self._make_durable(batch)
        t3 = time.perf_counter()
        self._flush()
        if pending is not None:
            # The previous batch's ledger record travelled with this batch's handling and
            # publishes: acknowledged by now (or waited for), its batch is committed.
            if not self._pending_acked(pending, polled):
                return
            self._commit_pending(pending)
        deferred = False
        if durable:
            self._settle_unsendable(batch)
            if self._send_ledger_batch(batch) or batch.given_up:
                # The ledger record's ack is awaited with the next batch's sends (one
                # flush per batch), unless a late dead letter is in flight too.
                deferred = self.pipeline_ledger and not batch.given_up
                if not deferred:
                    self._flush()
        t4 = time.perf_counter()
        if not durable or (
            not deferred and any(not f.is_done or f.failed() for f in batch.futures)
        ):
            self._rewind_all(polled)
        elif deferred:
            offsets, rewound = self._offsets(polled, batch)
            self._pending = _Pending(polled, offsets, batch.futures, rewound)
        else:
            offsets, rewound = self._offsets(polled, batch)
            self._commit(offsets, rewound)
        t5 = time.perf_counter()
        stats.handle_s += t2 - t1
        stats.durable_s += t3 - t2
        stats.ack_wait_s += t4 - t3
        stats.commit_s += t5 - t4
        if metrics is not None:
            metrics.record_batch(t2 - t1, t4 - t3, t5 - t4)

    # -- metrics -----------------------------------------------------------------------
    def _count_batch(self, metrics: LoopMetrics, polled: dict[TopicPartition, list[Any]]) -> None:
        """Add the batch's records read and sent, once per topic."""
        consumed: dict[str, int] = {}
        for tp, records in polled.items():
            consumed[tp.topic] = consumed.get(tp.topic, 0) + len(records)
        produced, self._produced = self._produced or {}, {}
        metrics.record_counts(consumed, produced)

    def _note_read(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """Remember where each polled partition's reading started and has got to."""
        read_end, read_start = dict(self._read_end), self._read_start
        for tp, records in polled.items():
            if records:
                read_start.setdefault(tp, records[0].offset)
                read_end[tp] = max(read_end.get(tp, 0), records[-1].offset + 1)
        self._read_end = read_end  # replaced whole: the scrape thread reads it

    def lag_positions(self) -> dict[TopicPartition, tuple[int, int]]:
        """Per partition assigned now: (its end as this loop knows it, its start).

        The end is the larger of the high watermark the loop's fetches answered (as of
        the last one it drained) and the offset after the last record read; the start
        is the last acknowledged offset (its commit is on its way, see :meth:`_commit`),
        else where the loop started reading, else the consumer's position. A
        partition not fetched yet is left out (unknown, not 0).
        """
        consumer = self.consumer
        if consumer is None:
            return {}
        try:
            assigned = consumer.assignment()
        except (RuntimeError, KafkaError):  # changing under a rebalance: next scrape
            return {}
        read_end, read_start, acked = self._read_end, dict(self._read_start), dict(self._acked)
        known: dict[TopicPartition, tuple[int, int]] = {}
        for tp in assigned:
            base = acked.get(tp)
            if base is None:
                base = read_start.get(tp)
            if base is None:
                base = _position(consumer, tp)
            if base is not None:
                known[tp] = (max(read_end.get(tp, 0), _highwater(consumer, tp) or 0, base), base)
        return known

    def lag(self, ends: Mapping[TopicPartition, int] | None = None) -> dict[tuple[str, int], int]:
        """Records readable but not yet committed, by (topic, partition) assigned now.

        ``ends``: partition ends as a fetch answered them just now (the embedded
        broker's ListOffsets runs behind; the loop's own high watermarks are as of
        its last fetch drained): counted where larger than the loop's own.
        """
        ends = ends or {}
        return {
            (tp.topic, tp.partition): max(ends.get(tp, end), end) - base
            for tp, (end, base) in self.lag_positions().items()
        }

    @property
    def rejoins(self) -> int:
        """Times this loop's consumers were made to rejoin their group."""
        consumer = self.consumer
        return self._past_rejoins + int(getattr(consumer, "rejoins", 0) if consumer else 0)

    def _pending_acked(
        self, pending: _Pending, polled: dict[TopicPartition, list[Any]] | None
    ) -> bool:
        """Whether the previous batch's ledger record is acknowledged (waiting if need be).

        Not acknowledged: the previous batch and the one just ``polled`` (already
        handled: its publishes repeat, and every consumer downstream is idempotent)
        are rewound and handled again.
        """
        t0 = time.perf_counter()
        if any(not f.is_done for f in pending.futures):
            self._flush()
        self.stats.ack_wait_s += time.perf_counter() - t0
        if any(not f.is_done or f.failed() for f in pending.futures):
            self._rewind_all({**(polled or {}), **pending.polled})
            return False
        return True

    def _commit_pending(self, pending: _Pending) -> None:
        t0 = time.perf_counter()
        self._commit(pending.offsets, pending.rewound)
        self.stats.commit_s += time.perf_counter() - t0

    def _finish_pending(self) -> None:
        """Commit the batch whose ledger record is in flight once it is acknowledged."""
        pending, self._pending = self._pending, None
        if pending is not None and self._pending_acked(pending, None):
            self._commit_pending(pending)

    def _make_durable(self, batch: BatchContext) -> bool:
        try:
            self.handler.before_commit(batch)
        except Exception as exc:
            log.warning("%s could not make the batch durable: %s", self.actor, type(exc).__name__)
            return False
        return True

    def _flush(self) -> None:
        try:
            self.producer.flush(self.flush_timeout_s)
        except KafkaError as exc:
            # Unacknowledged sends show as failed or pending futures below.
            log.warning("%s flush failed: %s", self.actor, type(exc).__name__)

    def _send_ledger_batch(self, batch: BatchContext) -> bool:
        """A batched ledger gets the events of the records whose fate is settled, once."""
        ledger = self.ledger
        if ledger is None or not ledger.batch:
            return False
        tally = DeadLetterTally()
        for ctx in batch.records:
            if ctx.events and (ctx.settled_late or ctx.failure() is None):
                ledger.hold(ctx.events)
            if ctx.unrecorded is not None and ctx.failure() is None:
                tally.add(ctx.record, *ctx.unrecorded)
        if tally:
            self.stats.dead_lettered_unrecorded += len(tally)
            ledger.hold(tally.events(int(time.time() * 1000)))
        headers: list[tuple[str, bytes]] = []
        # Pipelined, the record goes out with the next batch's publishes (one produce
        # request fewer per batch); an idle loop flushes it when it checks it.
        wake = not self.pipeline_ledger or batch.given_up > 0
        if self.tracing is not None and self.tracing.enabled:
            with self.tracing.send(ledger.topic, headers, links=batch.links[:128]):
                batch.track(lambda: ledger.flush_batch(headers, wake=wake))
        else:
            batch.track(lambda: ledger.flush_batch(headers, wake=wake))
        return True

    def _settle_unsendable(self, batch: BatchContext) -> None:
        """Give up on records that can never be sent, or that keep failing alone.

        Too large (or otherwise refused for good): dead-lettered by reference.
        Not acknowledged ``max_attempts`` times while the broker answered other
        sends of the batch: dead-lettered whole (stage ``SEND``), replayable.
        """
        broker_answers = any(f.succeeded() for c in batch.records for f in c.futures) or any(
            f.succeeded() for f in batch.futures
        )
        for ctx in batch.records:
            exc = ctx.failure()
            if exc is None:
                continue
            key = (ctx.record.topic, ctx.record.partition, ctx.record.offset)
            attempts = self._attempts.get(key, 0) + 1
            if _unsendable(exc):
                self._dead_letter_by_reference(batch, ctx, exc)
            elif broker_answers and attempts >= self.max_attempts:
                log.warning(
                    "%s gave up sending %s after %d attempts: %s",
                    self.actor,
                    _where(ctx.record),
                    attempts,
                    type(exc).__name__,
                )
                ctx.futures, ctx.events = [], []
                ctx.settled_late = True
                ctx.dead_letter(DeadLetterStage.SEND, exc)
                batch.given_up += 1  # one more send to wait for

    def _dead_letter_by_reference(
        self, batch: BatchContext, ctx: RecordContext, exc: BaseException
    ) -> None:
        self.stats.dead_lettered_by_reference += 1
        if self.metrics is not None:
            self.metrics.record_dead_lettered(
                ctx.record.topic, DeadLetterStage.UNSENDABLE, type(exc).__name__
            )
        log.warning(
            "%s dead-lettered %s by reference: %s",
            self.actor,
            _where(ctx.record),
            type(exc).__name__,
        )
        ctx.futures, ctx.events = [], []
        ctx.settled_late = True
        ctx.unrecorded = None
        batch.given_up += 1
        ctx.track(
            functools.partial(
                send_dead_letter_reference,
                self.producer,
                self.deadletter_topic,
                ctx.record,
                exc,
                self.actor,
            )
        )
        ctx._dead_letter_event(DeadLetterStage.UNSENDABLE, exc)

    def _offsets(
        self, polled: dict[TopicPartition, list[Any]], batch: BatchContext
    ) -> tuple[dict[TopicPartition, OffsetAndMetadata], bool]:
        """Each partition's offset up to its first unacknowledged record; rewind to that one.

        Returns the offsets to commit and whether any partition was rewound.
        """
        failed = {
            (c.record.topic, c.record.partition, c.record.offset)
            for c in batch.records
            if c.failure() is not None
        }
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        rewind: dict[TopicPartition, int] = {}
        for tp, records in polled.items():
            next_offset = records[-1].offset + 1
            for record in records:
                key = (record.topic, record.partition, record.offset)
                if key in failed:
                    next_offset = record.offset
                    self._attempts[key] = self._attempts.get(key, 0) + 1
                    rewind[tp] = record.offset
                    break
                self._attempts.pop(key, None)
            if next_offset > records[0].offset:
                offsets[tp] = OffsetAndMetadata(next_offset, "", -1)
        if rewind:
            self.stats.redelivered_records += len(rewind)
            log.warning("%s: %d record(s) not acknowledged, retrying", self.actor, len(rewind))
            for tp, offset in rewind.items():
                self._seek(tp, offset)
        return offsets, bool(rewind)

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], rewound: bool) -> None:
        """Commit acknowledged offsets (a failure is logged and counted, not raised).

        With ``async_commit`` the commit is sent and the loop goes on (its answer is
        read during a later poll), at most every ``commit_interval_s`` while records
        flow (an idle poll sends what is left): acknowledged offsets only, so a lost
        or later commit only repeats records; :meth:`close` commits the last offsets
        and waits.
        """
        assert self.consumer is not None
        self.stats.batches += 1
        if offsets and self.metrics is not None:
            acked = dict(self._acked)
            acked.update((tp, o.offset) for tp, o in offsets.items())
            self._acked = acked  # replaced whole: the scrape thread reads it
        if offsets:
            if self.async_commit:
                self._last_offsets.update(offsets)
                self._unsent_commits.update(offsets)
                if time.monotonic() - self._last_commit_at >= self.commit_interval_s:
                    self._send_commits()
            else:
                try:
                    self.consumer.commit(offsets)
                except KafkaError as exc:
                    self._commit_failed(exc)
        if rewound:
            self._grow_backoff()
        else:
            self._backoff = 0.0
            self.stats.last_batch_at = time.monotonic()

    def _send_commits(self) -> None:
        """Send the acknowledged offsets not sent yet as one commit (not awaited)."""
        assert self.consumer is not None
        unsent, self._unsent_commits = self._unsent_commits, {}
        self._last_commit_at = time.monotonic()
        try:
            owned = self.consumer.assignment()
            # A partition revoked since its offsets were acknowledged: its new owner
            # goes on from the last commit (and repeats at worst).
            unsent = {tp: o for tp, o in unsent.items() if tp in owned}
            if unsent:
                self.consumer.commit_async(unsent, callback=self._commit_answered)
        except KafkaError as exc:
            self._commit_failed(exc)

    def _commit_answered(self, offsets: Any, response: Any) -> None:
        if isinstance(response, BaseException):
            self._commit_failed(response)

    def _commit_failed(self, exc: BaseException) -> None:
        # Acknowledged but not committed: the next owner repeats them (idempotent).
        self.stats.commit_failures += 1
        log.warning(
            "%s commit failed (records will be redelivered): %s", self.actor, type(exc).__name__
        )

    def _commit_last(self) -> None:
        """Commit (and wait for) the last offsets sent asynchronously, of partitions still owned."""
        assert self.consumer is not None
        sent, self._last_offsets = self._last_offsets, {}
        self._unsent_commits = {}
        try:
            owned = self.consumer.assignment()
            last = {tp: o for tp, o in sent.items() if tp in owned}
            if last:
                self.consumer.commit(last)
        except KafkaError as exc:
            self._commit_failed(exc)

    def _rewind_all(self, polled: dict[TopicPartition, list[Any]]) -> None:
        self.stats.retried_batches += 1
        log.warning("%s batch not acknowledged, retrying it", self.actor)
        for tp, records in polled.items():
            self._seek(tp, records[0].offset)
        self._grow_backoff()

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        assert self.consumer is not None
        # A partition revoked meanwhile: its new owner resumes from the commit.
        with contextlib.suppress(KafkaError, AssertionError, ValueError, KeyError):
            self.consumer.seek(tp, offset)

    def _grow_backoff(self) -> None:
        self._backoff = min(max(self._backoff * 2, 0.2), self.max_backoff_s)

    def _chain(self, middlewares: list[Middleware]) -> Callable[[Any, RecordContext], None]:
        call: Callable[[Any, RecordContext], None] = self.handler.handle
        for middleware in reversed(middlewares):
            call = _bind(middleware, call)
        return call


def _bind(
    middleware: Middleware, call_next: Callable[[Any, RecordContext], None]
) -> Callable[[Any, RecordContext], None]:
    def call(record: Any, ctx: RecordContext) -> None:
        middleware(record, ctx, call_next)

    return call


def _highwater(consumer: KafkaConsumer, tp: TopicPartition) -> int | None:
    """The high watermark the partition's last fetch answered (None: not fetched)."""
    try:
        high = consumer.highwater(tp)
    except (KafkaError, AssertionError):
        return None
    return None if high is None else int(high)


def _position(consumer: KafkaConsumer, tp: TopicPartition) -> int | None:
    """The consumer's position in ``tp`` as it stands, without asking the broker.

    (:meth:`KafkaConsumer.position` may fetch the committed offset first: not from a
    scrape's thread.) None when not known yet.
    """
    try:
        state = consumer._subscription.assignment.get(tp)
        position = getattr(state, "position", None)
        offset = getattr(position, "offset", position)
        return None if offset is None else int(offset)
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None


def _key_id(key: bytes | None) -> str:
    """The record key as a referral id if it is one, else ``""``."""
    try:
        return str(uuid.UUID(key.decode("ascii"))) if key else ""
    except (UnicodeDecodeError, ValueError):
        return ""


def _where(record: Any) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"
