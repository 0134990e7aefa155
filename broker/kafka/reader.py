"""The one way to read a topic without a group: to its end from a position, or one record.

Ends are judged by an idle poll as well as by the listed end offsets (Tansu lists them behind).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.errors import KafkaBrokerError

__all__ = ["EndProbe", "TopicReader", "fetched_ends"]


class TopicReader:
    """Reads ``topics`` with a group-less ``consumer`` (the caller owns and closes it)."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        *topics: str,
        timeout: float = 10.0,
        idle: float = 0.5,
        poll_ms: int = 100,
        wait_for_topic: float = 0.0,
    ) -> None:
        self.consumer = consumer
        self.topics = topics
        self.timeout = timeout
        self.idle = idle
        self.poll_ms = poll_ms
        #: How long a topic the metadata does not know yet is waited for (just created).
        self.wait_for_topic = wait_for_topic

    def partitions(self, topic: str, wait: float | None = None) -> list[int]:
        """The partitions of ``topic`` (waiting up to ``wait`` s for metadata); [] if none."""
        deadline = time.monotonic() + (self.wait_for_topic if wait is None else wait)
        parts = self.consumer.partitions_for_topic(topic)
        while parts is None and time.monotonic() < deadline:
            time.sleep(0.05)
            parts = self.consumer.partitions_for_topic(topic)
        return sorted(parts or ())

    def batches(
        self,
        start: Mapping[TopicPartition, int] | None = None,
        *,
        partitions: Iterable[TopicPartition] | None = None,
        max_records: int = 2000,
    ) -> Iterator[list[Any]]:
        """Record batches from ``start`` (default: the beginning) until every partition is
        past its listed end and nothing came for ``idle`` s, or ``timeout`` passed."""
        tps = list(partitions) if partitions is not None else self._all()
        if not tps:
            return
        try:
            self.consumer.assign(tps)
            begin = {tp: (start or {}).get(tp) for tp in tps}
            for tp, offset in begin.items():
                if offset is None:
                    self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, offset)
            end = self.consumer.end_offsets(tps)
            position = {tp: begin[tp] or 0 for tp in tps}
            deadline = time.monotonic() + self.timeout
            last = time.monotonic()
            while time.monotonic() < deadline:
                got = self.consumer.poll(timeout_ms=self.poll_ms, max_records=max_records)
                records = [r for recs in got.values() for r in recs]
                if records:
                    for r in records:
                        tp = TopicPartition(r.topic, r.partition)
                        position[tp] = max(position.get(tp, 0), r.offset + 1)
                    last = time.monotonic()
                    yield records
                    continue
                caught_up = all(position[tp] >= int(end.get(tp, 0)) for tp in tps)
                if caught_up and time.monotonic() - last >= self.idle:
                    return
        except KafkaError as exc:
            raise KafkaBrokerError(
                f"cannot read {', '.join(self.topics)}: {type(exc).__name__}"
            ) from exc

    def follow(
        self,
        *,
        from_beginning: bool = False,
        idle_exit: float | None = None,
        start: Mapping[TopicPartition, int] | None = None,
    ) -> Iterator[list[Any]]:
        """Record batches as they come (from ``start``'s partitions and offsets, else from
        the beginning or the end) until the caller stops, or nothing came for ``idle_exit``
        s; an idle poll yields nothing."""
        tps = list(start) if start is not None else self._all()
        if not tps:
            return
        try:
            self.consumer.assign(tps)
            if start is not None:
                for tp, offset in start.items():
                    self.consumer.seek(tp, offset)
            elif from_beginning:
                self.consumer.seek_to_beginning(*tps)
            else:
                self.consumer.seek_to_end(*tps)
            last = time.monotonic()
            while True:
                got = self.consumer.poll(timeout_ms=self.poll_ms)
                records = [r for recs in got.values() for r in recs]
                if records:
                    last = time.monotonic()
                    yield records
                elif idle_exit is not None and time.monotonic() - last >= idle_exit:
                    return
        except KafkaError as exc:
            names = ", ".join(self.topics)
            raise KafkaBrokerError(f"cannot read {names}: {type(exc).__name__}") from exc

    def records(self, start: Mapping[TopicPartition, int] | None = None) -> Iterator[Any]:
        """Every record from ``start`` to the end, in the order the batches came."""
        for batch in self.batches(start):
            yield from batch

    def fetch(self, topic: str, partition: int, offset: int) -> Any | None:
        """The record at ``topic[partition]@offset``, or None if it is no longer there."""
        tp = TopicPartition(topic, partition)
        try:
            self.consumer.assign([tp])
            self.consumer.seek(tp, offset)
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                for recs in self.consumer.poll(timeout_ms=self.poll_ms).values():
                    for rec in recs:
                        if rec.offset == offset:
                            return rec
                        if rec.offset > offset:
                            return None
        except KafkaError as exc:
            raise KafkaBrokerError(f"cannot read {topic}: {type(exc).__name__}") from exc
        return None

    def _all(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in self.topics for p in self.partitions(t)]


def fetched_ends(
    consumer: KafkaConsumer, near: Mapping[TopicPartition, int], timeout: float = 5.0
) -> dict[TopicPartition, int]:
    """Each partition's end as a fetch answers it (its high watermark), not as ListOffsets
    lists it (Tansu lists ends behind what can be read): one fetch from just before
    ``near`` (the end as far as the caller knows), not a read of the partition.

    ``consumer`` has no group; it is assigned here and left unassigned. A partition
    whose fetch did not answer within ``timeout`` keeps ``near``.
    """
    ends = {tp: int(end) for tp, end in near.items()}
    if not ends:
        return ends
    consumer.assign(list(ends))
    try:
        for tp, end in ends.items():
            consumer.seek(tp, max(end - 1, 0))
        answered: set[TopicPartition] = set()
        deadline = time.monotonic() + timeout
        while len(answered) < len(ends) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100, max_records=len(ends))
            for tp in ends:
                high = consumer.highwater(tp)
                if high is not None:
                    answered.add(tp)
                    ends[tp] = max(int(high), ends[tp])
    finally:
        consumer.assign([])
    return ends


class EndProbe:
    """Partition ends as fetches answer them, for a consume loop's lag (a scrape's thread).

    The loop's own consumer knows a partition's high watermark only as of the last
    fetch it drained; the probe asks with a group-less consumer of its own (made by
    ``factory`` on first use, closed by :meth:`close`).
    """

    def __init__(self, factory: Callable[[], KafkaConsumer], timeout: float = 2.0) -> None:
        self._factory = factory
        self._consumer: KafkaConsumer | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.timeout = timeout

    def __call__(self, near: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The ends of the partitions of ``near`` (empty if the broker did not answer)."""
        with self._lock:
            if self._closed or not near:
                return {}
            try:
                if self._consumer is None:
                    self._consumer = self._factory()
                return fetched_ends(self._consumer, near, self.timeout)
            except (KafkaError, KafkaBrokerError, AssertionError, ValueError, KeyError):
                return {}

    def close(self) -> None:
        """Close the probe's consumer; later calls answer nothing."""
        with self._lock:
            self._closed = True
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError):
                consumer.close(autocommit=False)
