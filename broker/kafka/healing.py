"""Long-lived Kafka clients that get out of the states kafka-python 3.0 never leaves."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import IllegalStateError, KafkaError, KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import MemberState, TopicPartition

__all__ = [
    "HealingConsumer",
    "HealingProducer",
    "fatal_reason",
    "stranded_in_rebalance",
    "topic_id",
]

log = logging.getLogger("referral.kafka.producer")
consumer_log = logging.getLogger("referral.kafka.consumer")

#: How long a retired producer's sender thread may take to fail what it still holds.
_RETIRE_JOIN_S = 5.0
#: Tries of one ``send`` when the producer was closed or replaced under the caller.
_SEND_TRIES = 3
#: How long a flush may wait before the producer's metadata is refreshed and checked.
PROBE_AFTER_S = 3.0
#: How often a send to a known topic checks the producer's health.
CHECK_EVERY_S = 0.05
#: How long a flush may wait in all before its producer is taken for stuck and replaced.
STUCK_AFTER_S = 10.0
#: Sequence resets after ``UnknownProducerId`` within one probe interval that mean the
#: broker has lost the producer id (one per partition is kafka-python's normal recovery).
RETENTION_RESETS = 10
#: How long a probe waits for that metadata.
_PROBE_METADATA_S = 2.0
#: How long one poll may wait for a group (re)join that is due (see HealingConsumer).
JOIN_WAIT_MS = 5000
#: A consumer counts as busy this long after a poll that returned records.
BUSY_FOR_S = 0.25
#: How long a group member must look stranded before it is told to rejoin (a join
#: that is just completing looks stranded for an instant).
STRANDED_GRACE_S = 2.0
#: How often a member assigned nothing looks whether its topics have partitions now (s).
STARVED_CHECK_S = 2.0


def fatal_reason(producer: KafkaProducer) -> str | None:
    """Why ``producer`` can never deliver again, or None while it still can.

    Reads kafka-python (3.0.x) internals, each guarded so that a release without
    them reads as healthy: ``_closed`` (closed), ``_sender`` (its I/O thread) and
    ``_transaction_manager.has_fatal_error()`` (the terminal ``FATAL_ERROR`` state).
    """
    if getattr(producer, "_closed", False):
        return "closed"
    sender = getattr(producer, "_sender", None)
    if sender is not None and not sender.is_alive():
        return "sender thread stopped"
    manager = getattr(producer, "_transaction_manager", None)
    if manager is not None and manager.has_fatal_error():
        return _describe(getattr(manager, "last_error", None))
    return None


#: One TopicPartition per (topic, partition) sent to, reused by every append.
_PARTITIONS: dict[tuple[str, int], TopicPartition] = {}
#: Bytes a record batch and a record's framing add at most beyond key, value and headers.
_FRAMING_BYTES = 512


class _FastPath(NamedTuple):
    """The kafka-python internals a record appended straight to the accumulator needs."""

    producer: KafkaProducer
    accumulator: Any
    sender: Any
    metadata: Any
    max_request_size: int


def _fast_path(producer: KafkaProducer) -> _FastPath | None:
    """The internals :func:`_append` uses, or None when this producer has no fast path.

    Reads kafka-python 3.0 internals (``_accumulator``, ``_sender``, ``_metadata``),
    each guarded; a transactional producer always takes the ordinary ``send``.
    """
    accumulator = getattr(producer, "_accumulator", None)
    sender = getattr(producer, "_sender", None)
    metadata = getattr(producer, "_metadata", None)
    if accumulator is None or sender is None or metadata is None:
        return None
    if not callable(getattr(metadata, "partitions_for_topic", None)):
        return None
    manager = getattr(producer, "_transaction_manager", None)
    if manager is not None and manager.is_transactional():
        return None
    return _FastPath(producer, accumulator, sender, metadata, producer.config["max_request_size"])


def _append(
    fast: _FastPath,
    topic: str,
    partition: int,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None,
    wake: bool = True,
) -> FutureRecordMetadata | None:
    """Append one record to an explicit partition straight to the producer's accumulator.

    What :meth:`kafka.KafkaProducer.send` does for such a record, less its per-call
    checks that a caller with bytes, ``(str, bytes)`` headers and a known partition
    does not need (≈ 13 µs of kafka-python's ≈ 35 µs per record here). Returns None
    — and the caller sends the ordinary way, with every check and error — whenever
    one of its conditions does not hold: a closed producer, a topic without
    metadata, a partition outside it, values that are not bytes, or a record that
    might be near ``max_request_size``.
    """
    if getattr(fast.producer, "_closed", True):
        return None
    if type(value) is not bytes or (key is not None and type(key) is not bytes):
        return None
    parts = fast.metadata.partitions_for_topic(topic)
    if not parts or partition not in parts:
        return None
    headers = headers or []
    size = len(value) + (len(key) if key else 0) + _FRAMING_BYTES
    for name, data in headers:
        if type(name) is not str or type(data) is not bytes:
            return None
        size += len(name) * 4 + len(data) + 10
    if size > fast.max_request_size:
        return None
    tp = _PARTITIONS.get((topic, partition))
    if tp is None:
        tp = _PARTITIONS[(topic, partition)] = TopicPartition(topic, partition)
        if len(_PARTITIONS) > 65_536:
            _PARTITIONS.clear()
    future, batch_is_full, new_batch, _ = fast.accumulator.append(tp, None, key, value, headers)
    if batch_is_full or (new_batch and wake):
        fast.sender.wakeup()
    return future  # type: ignore[no-any-return]


def topic_id(client: object, topic: str) -> object | None:
    """The id of ``topic`` in a kafka-python client's metadata (None if unknown or too old)."""
    cluster = getattr(client, "_metadata", None) or getattr(client, "_cluster", None)
    lookup = getattr(cluster, "topic_id", None)
    return lookup(topic) if lookup is not None else None


def _describe(error: object) -> str:
    if error is None:
        return "fatal error"
    if type(error) is KafkaError and str(error):
        # kafka-python wraps broker answers it does not expect in a bare KafkaError
        # ("KafkaError: Unexpected error in InitProducerIdResponse: [Error -1] UnknownError");
        # the text names the request and the error code, never record content.
        return str(error).splitlines()[0][:160]
    return type(error).__name__


class HealingProducer:
    """A producer for one role that builds a fresh kafka-python producer when its own is dead.

    ``factory`` makes a new :class:`kafka.KafkaProducer`: the first one unless
    ``producer`` is given, and every replacement. Replacements are spaced by at least
    ``min_interval`` seconds, doubling up to ``max_interval`` while they keep
    coming, so a producer that can never work (say, refused authorisation) is not
    rebuilt in a loop. Thread-safe: many threads may share one instance.
    """

    def __init__(
        self,
        factory: Callable[[], KafkaProducer],
        role: str,
        *,
        producer: KafkaProducer | None = None,
        min_interval: float = 1.0,
        max_interval: float = 60.0,
    ) -> None:
        self.role = role
        self._factory = factory
        self._min_interval = min_interval
        self._max_interval = max_interval
        self._lock = threading.Lock()
        self._producer: KafkaProducer = producer if producer is not None else factory()
        self._resets = _count_sequence_resets(self._producer)
        self._closed = False
        self._delay = min_interval
        self._next_allowed = 0.0
        self._last_replaced = float("-inf")
        #: Topic -> the topic id the current producer produced under.
        self._topic_ids: dict[str, object] = {}
        self._unrecorded: set[str] = set()
        self._checked_until = 0.0
        #: The current producer's fast path for records to a known partition (see _append).
        self._fast: _FastPath | None = None
        self._fast_for: KafkaProducer | None = None  # the producer _fast was read from
        #: Records that took the fast path (the rest went through ``KafkaProducer.send``).
        self.fast_sends = 0
        #: How many times the underlying producer was replaced.
        self.replacements = 0
        #: Seconds a flush waits before probing the producer's metadata.
        self.probe_after = PROBE_AFTER_S
        #: Seconds after which a flush still waiting replaces the producer.
        self.stuck_after = STUCK_AFTER_S

    # -- the producer interface -----------------------------------------------------------

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        *,
        wake: bool = True,
    ) -> FutureRecordMetadata:
        """Send one record asynchronously (as :meth:`kafka.KafkaProducer.send`).

        ``wake=False`` (a record to an explicit partition): do not wake the sender
        for it; it goes with the next flush or batch sent (or once its linger is up).
        """
        for attempt in range(_SEND_TRIES):
            producer = self.current(topic)
            try:
                if partition is not None and timestamp_ms is None:
                    if self._fast_for is not producer:
                        self._fast, self._fast_for = _fast_path(producer), producer
                    fast = self._fast
                    future = (
                        _append(fast, topic, partition, key, value, headers, wake) if fast else None
                    )
                    if future is not None:
                        self.fast_sends += 1
                        return future
                return producer.send(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,
                    partition=partition,
                    timestamp_ms=timestamp_ms,
                )
            except IllegalStateError:
                # Closed (or replaced) under us before the record was enqueued:
                # nothing is in flight, so the next producer may take it.
                if self._closed or attempt == _SEND_TRIES - 1 or fatal_reason(producer) is None:
                    raise
                self._checked_until = 0.0  # the next current() checks (and replaces) at once
        raise AssertionError("unreachable")  # pragma: no cover

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record sent so far is acknowledged or failed.

        A flush that takes longer than ``probe_after`` seconds is probed: the
        producer's metadata is refreshed and the producer replaced at once if a
        topic it produced to was created anew (an empty new broker) or it died
        meanwhile — kafka-python would otherwise retry an ``UnknownProducerId``
        it takes for a retention-based one until ``timeout``. A flush that times
        out, or that has waited ``stuck_after`` seconds, is replaced too
        (rate-limited; its records are sent again): seen after an empty broker
        restart, a fresh producer waiting half a minute for metadata that a
        newer one had at once.
        """
        producer = self.current()
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        try:
            while True:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                step = self.probe_after if left is None else min(self.probe_after, left)
                try:
                    producer.flush(step)
                    self._record_topic_ids(producer)
                    return
                except KafkaTimeoutError:
                    if left is not None and left <= step:
                        self._replace_if_current(producer, "flush timed out")
                        raise
                    if self._probe(producer):
                        raise
                    if time.monotonic() - started >= self.stuck_after:
                        self._replace_if_current(producer, "flush stuck")
                        raise
        finally:
            if not self._closed:
                # Replace now if it died during the flush: the caller's retry goes to a live one.
                self.current()

    def _probe(self, producer: KafkaProducer) -> bool:
        """Check a producer whose flush is slow; True if it is no longer the current one.

        It is replaced (and :class:`KafkaTimeoutError` raised) when kafka-python kept
        resetting sequences for an ``UnknownProducerId`` it takes for a retention-based
        one (``RETENTION_RESETS`` or more since the last probe: the broker does not know
        the producer id), when it died, or when a topic it produced to turns out to
        have been created anew once its metadata is refreshed.
        """
        resets = self._resets.take() if self._producer is producer else 0
        if resets >= RETENTION_RESETS:
            self._replace_if_current(producer, f"{resets} unknown-producer-id retries")
            raise KafkaTimeoutError("producer replaced during flush (unknown producer id)")
        request = getattr(getattr(producer, "_metadata", None), "request_update", None)
        if request is not None:
            refreshed = threading.Event()
            with contextlib.suppress(KafkaError, AttributeError):
                request().add_both(lambda _: refreshed.set())
                refreshed.wait(_PROBE_METADATA_S)
        with self._lock:
            if self._closed or self._producer is not producer:
                return True
            reason = fatal_reason(producer) or self._recreated(list(self._topic_ids))
        if reason is None:
            return False
        self._replace_if_current(producer, reason)
        raise KafkaTimeoutError(f"producer replaced during flush ({reason})")

    def _replace_if_current(self, producer: KafkaProducer, reason: str) -> None:
        with self._lock:
            stuck = not self._closed and self._producer is producer
            if stuck and time.monotonic() >= self._next_allowed:
                self._replace(reason)

    def partitions_for(self, topic: str) -> set[int]:
        """The partition ids of ``topic`` (waits for metadata, as kafka-python does)."""
        partitions: set[int] = self.current().partitions_for(topic)
        return partitions

    def close(self, timeout: float | None = None) -> None:
        """Flush and close the current producer (no replacement afterwards)."""
        with self._lock:
            self._closed = True
            producer = self._producer
        producer.close(timeout)

    # -- healing --------------------------------------------------------------------------

    def current(self, topic: str | None = None) -> KafkaProducer:
        """The producer to use now (for ``topic``, or for anything).

        It is replaced first if it reached a state it cannot leave, or if a topic
        it produced to (``topic``, or any without one) was created anew since.
        Sends to a topic already known are checked at most every ``CHECK_EVERY_S``
        (the check costs more than a send's own bookkeeping on the router's hot path);
        a slow flush probes at once (:meth:`flush`).
        """
        now = time.monotonic()
        if topic is not None and now < self._checked_until and topic in self._topic_ids:
            return self._producer
        with self._lock:
            self._checked_until = now + CHECK_EVERY_S
            if self._closed:
                return self._producer  # kafka-python raises on send, as for any closed producer
            reason = fatal_reason(self._producer) or self._recreated(
                [topic] if topic is not None else list(self._topic_ids)
            )
            if reason is not None and time.monotonic() >= self._next_allowed:
                self._replace(reason)
            if topic is not None and topic not in self._topic_ids:
                known = topic_id(self._producer, topic)
                if known is not None:
                    self._topic_ids[topic] = known
                else:
                    # First send: its metadata arrives with it; recorded after a flush.
                    self._unrecorded.add(topic)
            return self._producer

    def _record_topic_ids(self, producer: KafkaProducer) -> None:
        """Record the ids of topics first sent to before their metadata was known."""
        with self._lock:
            if self._producer is not producer or not self._unrecorded:
                return
            for topic in list(self._unrecorded):
                known = topic_id(producer, topic)
                if known is not None:
                    self._topic_ids.setdefault(topic, known)
                    self._unrecorded.discard(topic)

    def _recreated(self, topics: list[str]) -> str | None:
        """Which of ``topics`` now has another id than the one produced under (lock held)."""
        for topic in topics:
            known = self._topic_ids.get(topic)
            seen = topic_id(self._producer, topic) if known is not None else None
            if seen is not None and seen != known:
                return f"topic {topic} was created anew"
        return None

    def _replace(self, reason: str) -> None:
        """Swap in a new producer and retire the old one (lock held)."""
        now = time.monotonic()
        if now - self._last_replaced > self._max_interval:
            self._delay = self._min_interval
        self._next_allowed = now + self._delay
        self._delay = min(self._delay * 2, self._max_interval)
        try:
            fresh = self._factory()
        except (KafkaError, OSError, ValueError) as exc:
            log.warning(
                "%s producer unusable (%s), replacement failed (%s); retrying in %.0fs",
                self.role,
                reason,
                type(exc).__name__,
                self._next_allowed - now,
            )
            return
        old, self._producer = self._producer, fresh
        self._resets = _count_sequence_resets(fresh)
        self._topic_ids.clear()
        self._unrecorded.clear()
        self._checked_until = 0.0
        self._last_replaced = now
        self.replacements += 1
        log.warning("%s producer replaced (%s): new producer id", self.role, reason)
        _retire(old)


class _ResetCounter:
    """Counts kafka-python's sequence resets of one producer (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0

    def bump(self) -> None:
        with self._lock:
            self._n += 1

    def take(self) -> int:
        """The resets since the last call."""
        with self._lock:
            n, self._n = self._n, 0
            return n


def _count_sequence_resets(producer: KafkaProducer) -> _ResetCounter:
    """Count ``producer``'s sequence resets after an ``UnknownProducerId``.

    kafka-python 3.0 resets a partition's sequence (and forgets its last acked
    offset) only when it judges an ``UnknownProducerId`` retention-based, then
    retries; against a broker that lost the id that repeats every retry backoff
    until the delivery timeout. Guarded: a release without the hook counts nothing.
    """
    counter = _ResetCounter()
    manager = getattr(producer, "_transaction_manager", None)
    reset = getattr(manager, "reset_sequence_for_partition", None)
    if manager is None or reset is None:
        return counter

    def counted(tp: Any) -> Any:
        counter.bump()
        return reset(tp)

    manager.reset_sequence_for_partition = counted
    return counter


def _retire(producer: KafkaProducer) -> None:
    """Stop a dead producer so that every future it still holds resolves (as failed)."""
    sender: Any = getattr(producer, "_sender", None)
    if sender is not None and sender.is_alive():
        sender.force_close()  # aborts every incomplete batch: its futures fail now
        sender.join(_RETIRE_JOIN_S)
    try:
        producer.close(0)
    except KafkaError as exc:
        log.debug("retired producer close: %s", type(exc).__name__)


def stranded_in_rebalance(consumer: KafkaConsumer) -> bool:
    """True when ``consumer``'s group member is rebalancing but will never finish.

    kafka-python 3.0 drives a rejoin only while ``need_rejoin()`` holds; a rejoin
    started because the topics' metadata changed is abandoned when the metadata
    changes back, and the member stays ``REBALANCING`` with nothing assigned.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "group_id", None) is None:
        return False
    if getattr(coordinator, "state", None) is not MemberState.REBALANCING:
        return False
    return not coordinator.need_rejoin()


class HealingConsumer(KafkaConsumer):  # type: ignore[misc]
    """A :class:`kafka.KafkaConsumer` that rejoins its group when left stranded mid-rebalance.

    ``busy_fetch_wait_ms`` (default 0: off): while records are flowing, fetches
    wait at most this long on the broker instead of ``fetch_max_wait_ms``. A
    broker that finds nothing for a fetch and then sleeps its whole wait before
    looking again (Tansu 0.6 does) adds up to ``fetch_max_wait_ms`` to every hop;
    a short wait only while busy keeps hops fast without an idle consumer
    fetching a hundred times a second.
    """

    def __init__(self, *topics: str, busy_fetch_wait_ms: int = 0, **configs: Any) -> None:
        super().__init__(*topics, **configs)
        self._idle_fetch_wait_ms = int(self.config["fetch_max_wait_ms"])
        self._busy_fetch_wait_ms = int(busy_fetch_wait_ms)
        self._busy_until = 0.0
        self._stranded_since: float | None = None
        self._topic_ids: dict[str, object] = {}
        self._next_starved_check = 0.0
        #: How many times this consumer asked to rejoin a rebalance left unfinished.
        self.rejoins = 0
        #: How many times it read a topic created anew from the beginning.
        self.rewinds = 0
        #: True once the group gave it nothing from topics that have partitions: the
        #: consume loop closes it and joins with a new consumer (:meth:`poll` says so once).
        self.starved = False
        #: What this member, as the group's leader, last assigned itself (partition count).
        self._own_share = 0
        self._watch_assignments()

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None, update_offsets: bool = True
    ) -> dict[Any, list[Any]]:
        """Fetch records (as :meth:`kafka.KafkaConsumer.poll`), healing first if needed."""
        self._rejoin_if_stranded()
        self._rejoin_if_starved()
        self._rewind_recreated_topics()
        records: dict[Any, list[Any]] = super().poll(
            timeout_ms=self._join_aware(timeout_ms),
            max_records=max_records,
            update_offsets=update_offsets,
        )
        if self._busy_fetch_wait_ms:
            self._pace_fetches(bool(records))
        return records

    def _pace_fetches(self, got_records: bool) -> None:
        """Short fetch waits while records flow, the configured wait once idle."""
        now = time.monotonic()
        if got_records:
            self._busy_until = now + BUSY_FOR_S
        wait = self._busy_fetch_wait_ms if now < self._busy_until else self._idle_fetch_wait_ms
        fetcher = getattr(self, "_fetcher", None)
        config = getattr(fetcher, "config", None)
        if isinstance(config, dict) and config.get("fetch_max_wait_ms") != wait:
            config["fetch_max_wait_ms"] = wait

    @property
    def fetch_wait_ms(self) -> int:
        """The wait the consumer's next fetch asks the broker for (ms)."""
        config = getattr(getattr(self, "_fetcher", None), "config", None)
        if isinstance(config, dict):
            return int(config.get("fetch_max_wait_ms", self._idle_fetch_wait_ms))
        return self._idle_fetch_wait_ms

    def _join_aware(self, timeout_ms: int) -> int:
        """The poll timeout: long enough to see a group join through once one is due.

        kafka-python 3.0.12 keeps a JoinGroup in flight across polls, but a join
        that completes *between* two polls is thrown away and a new JoinGroup sent
        (``join_group_async`` takes a finished task for a stale one). A broker that
        answers a JoinGroup after a fixed delay (Tansu: half the session timeout)
        and a loop polling every 200 ms can fall into step and rejoin for ever —
        seen after an empty broker restart: a status feed rejoining every 3 s for
        minutes, assigned nothing. So while a (re)join is due, one poll waits up
        to ``JOIN_WAIT_MS`` for it (it returns as soon as records arrive).
        """
        coordinator = getattr(self, "_coordinator", None)
        if coordinator is None or getattr(coordinator, "group_id", None) is None:
            return timeout_ms
        task = getattr(coordinator, "_join_task", None)
        joining = task is not None and not task.is_done
        try:
            due = joining or bool(coordinator.need_rejoin())
        except (AttributeError, KafkaError):
            return timeout_ms
        return max(timeout_ms, JOIN_WAIT_MS) if due else timeout_ms

    def _rejoin_if_stranded(self) -> None:
        if not stranded_in_rebalance(self):
            self._stranded_since = None
            return
        now = time.monotonic()
        if self._stranded_since is None:
            self._stranded_since = now
        elif now - self._stranded_since >= STRANDED_GRACE_S:
            self._stranded_since = None
            self.rejoins += 1
            consumer_log.warning(
                "consumer group %s: rebalance left unfinished, rejoining",
                self.config.get("group_id"),
            )
            self._coordinator.request_rejoin()

    def _watch_assignments(self) -> None:
        """Remember the share the leader computes for itself (Tansu may hand back another)."""
        coordinator: Any = getattr(self, "_coordinator", None)
        perform = getattr(coordinator, "_perform_assignment", None)
        if perform is None:
            return

        def performed(leader_id: str, protocol: str, members: Any) -> Any:
            assignments = perform(leader_id, protocol, members)
            own = assignments.get(leader_id)
            parts = getattr(own, "assigned_partitions", None) or []
            self._own_share = sum(len(p) for _, p in parts)
            return assignments

        coordinator._perform_assignment = performed

    def _rejoin_if_starved(self) -> None:
        """Mark the consumer starved when, as the group's leader, it assigned nothing from a
        topic that has partitions now.

        A group that (re)formed while its topics were missing (an empty broker restart,
        topics provisioned late) hands out ``[]``, and kafka-python 3.0 does not look
        again. The leader knows what it assigned from (``_assignment_snapshot``); a
        member idle only because the group has more members than partitions is left
        alone (the leader's snapshot had those partitions).
        """
        coordinator = getattr(self, "_coordinator", None)
        if self.starved or coordinator is None or getattr(coordinator, "group_id", None) is None:
            return
        if coordinator.generation_if_stable() is None or self.assignment():
            return
        now = time.monotonic()
        if now < self._next_starved_check:
            return
        self._next_starved_check = now + STARVED_CHECK_S
        cluster = self._client.cluster
        cluster.request_update()  # learn about topics created since the assignment
        snapshot = getattr(coordinator, "_assignment_snapshot", None)
        if not isinstance(snapshot, dict):
            return  # not the leader: the leader of the group rejoins for it
        grown = sorted(
            t
            for t in self.subscription() or ()
            if self._own_share
            or len(cluster.partitions_for_topic(t) or ()) > len(snapshot.get(t) or ())
        )
        if not grown:
            return
        self.rejoins += 1
        consumer_log.warning(
            "consumer group %s: assigned nothing while %s has partitions, joining again",
            self.config.get("group_id"),
            ", ".join(grown),
        )
        # A rejoin is not enough: Tansu answers a lone member's rejoin with the generation
        # and the empty assignment it had. Its loop replaces this consumer with a new one.
        self.starved = True

    def _rewind_recreated_topics(self) -> None:
        assigned = self.assignment()
        for topic in {tp.topic for tp in assigned}:
            seen = topic_id(self, topic)
            known = self._topic_ids.get(topic)
            if seen is None or seen == known:
                continue
            self._topic_ids[topic] = seen
            if known is None:
                continue
            self.rewinds += 1
            consumer_log.warning(
                "consumer group %s: topic %s was created anew, reading it from the beginning",
                self.config.get("group_id"),
                topic,
            )
            self.seek_to_beginning(*[tp for tp in assigned if tp.topic == topic])
