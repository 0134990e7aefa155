"""Topic statistics: message counts (read, or ListOffsets for big topics) and group lag.

A group's lag is a partition's true end (read, or the high watermark a fetch answers:
the embedded broker's ListOffsets runs behind both) less the group's committed offset,
as the consumers' own ``referral_consumer_lag`` metric counts it.

One computation for ``referral topics list`` and the console's ledger page; the
caller hands in the Kafka clients (an admin client and a group-less consumer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.errors import KafkaBrokerError
from broker.kafka.provision import describe_topics
from broker.kafka.reader import TopicReader, fetched_ends

__all__ = ["SMALL_TOPIC", "TopicStats", "deployment_topics", "topic_stats"]

#: Topics whose broker-reported total is at most this are always counted by reading.
SMALL_TOPIC = 10_000


@dataclass
class TopicStats:
    """Message count and consumer-group lag of one topic, and how they were obtained."""

    partitions: int
    messages: int
    listed: int
    source: str  # "read" or "listoffsets"
    lag: dict[str, int] = field(default_factory=dict)
    lag_error: str | None = None

    @property
    def source_label(self) -> str:
        """Human label of the count's source (notes a ListOffsets shortfall)."""
        if self.source == "listoffsets":
            return "ListOffsets"
        if self.listed != self.messages:
            return f"read (ListOffsets said {self.listed})"
        return "read"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "partitions": self.partitions,
            "messages": self.messages,
            "source": self.source,
            "listoffsets_messages": self.listed,
            "group_lag": dict(sorted(self.lag.items())),
        }


def deployment_topics(
    admin: KafkaAdminClient, prefix: str, *, every: bool = False
) -> dict[str, int]:
    """Topic → partition count of the topics named with ``prefix`` (``every``: all topics)."""
    found = describe_topics(admin)
    if prefix and not every:
        found = {name: n for name, n in found.items() if name.startswith(prefix)}
    return found


def _read_ends(
    consumer: KafkaConsumer, tps: list[TopicPartition], listed_end: dict[TopicPartition, int]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(records read, true end offset) per partition, reading from the start until idle."""
    counts = dict.fromkeys(tps, 0)
    ends = {tp: int(listed_end.get(tp, 0)) for tp in tps}
    topics = sorted({tp.topic for tp in tps})
    reader = TopicReader(consumer, *topics, timeout=30, idle=0.5, poll_ms=200)
    for batch in reader.batches(partitions=tps, max_records=5000):
        for r in batch:
            tp = TopicPartition(r.topic, r.partition)
            counts[tp] += 1
            ends[tp] = max(ends[tp], r.offset + 1)
    return counts, ends


def _counts(
    consumer: KafkaConsumer, topics: dict[str, int], exact: bool
) -> tuple[dict[str, TopicStats], dict[TopicPartition, int]]:
    """Each topic's count, and every partition's end offset (as read where it was read)."""
    tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
    try:
        begin = consumer.beginning_offsets(tps) if tps else {}
        end = consumer.end_offsets(tps) if tps else {}
        listed = dict.fromkeys(topics, 0)
        for tp in tps:
            listed[tp.topic] += int(end.get(tp, 0)) - int(begin.get(tp, 0))
        to_read = [tp for tp in tps if exact or listed[tp.topic] <= SMALL_TOPIC]
        counts, true_end = _read_ends(consumer, to_read, end) if to_read else ({}, {})
        # The others' ends as a fetch answers them (ListOffsets lists them behind).
        near = {tp: int(end[tp]) for tp in tps if tp not in true_end and end.get(tp, 0)}
        true_end.update(fetched_ends(consumer, near) if near else {})
    except KafkaError as exc:
        raise KafkaBrokerError(f"cannot count topic messages: {type(exc).__name__}") from exc
    stats: dict[str, TopicStats] = {}
    read_topics = {tp.topic for tp in to_read}
    for name, parts in topics.items():
        if name in read_topics:
            n = sum(c for tp, c in counts.items() if tp.topic == name)
            stats[name] = TopicStats(parts, n, listed[name], "read")
        else:
            stats[name] = TopicStats(parts, listed[name], listed[name], "listoffsets")
    return stats, {tp: true_end.get(tp, int(end.get(tp, 0))) for tp in tps}


def topic_stats(
    admin: KafkaAdminClient,
    consumer: KafkaConsumer,
    topics: dict[str, int],
    *,
    group_prefix: str = "",
    exact: bool = False,
) -> dict[str, TopicStats]:
    """Message counts (read, or ListOffsets for big topics) and committed-offset lag per group.

    ``consumer`` has no group (it is assigned and read here); only groups named with
    ``group_prefix`` count towards the lag.
    """
    stats, ends = _counts(consumer, topics, exact)
    try:
        groups = [g["group_id"] for g in admin.list_groups()]
        groups = [g for g in groups if g.startswith(group_prefix)]
        committed = admin.list_group_offsets(groups) if groups else {}
    except (KafkaError, ValueError) as exc:
        for s in stats.values():
            s.lag_error = type(exc).__name__
        return stats
    for group, offsets in committed.items():
        for tp, meta in offsets.items():
            if tp.topic not in stats or meta.offset < 0:
                continue
            lag = max(ends.get(tp, 0) - meta.offset, 0)
            s = stats[tp.topic]
            s.lag[group] = s.lag.get(group, 0) + lag
    return stats
