"""The one topic reader against the real test broker: to the end, from a position, one record."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.reader import TopicReader


@pytest.fixture
def consumer(settings: Settings) -> Iterator[KafkaConsumer]:
    c = clients.consumer(settings, group_id=None, role="test-reader")
    yield c
    c.close()


def _topic(settings: Settings, name: str, partitions: int, per_partition: int) -> str:
    topic = settings.topic_prefix + name
    admin = clients.admin_client(settings)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    producer = clients.producer(settings, role="test")
    try:
        for p in range(partitions):
            for i in range(per_partition):
                producer.send(topic, partition=p, key=b"k", value=f"{p}:{i}".encode())
        producer.flush(30)
    finally:
        producer.close(5)
    return topic


def test_reads_every_partition_to_its_end_and_from_a_position(
    settings: Settings, consumer: KafkaConsumer
) -> None:
    topic = _topic(settings, "reader", partitions=3, per_partition=40)
    reader = TopicReader(consumer, topic, timeout=20, idle=0.3, wait_for_topic=10)
    values = sorted(r.value.decode() for r in reader.records())
    assert values == sorted(f"{p}:{i}" for p in range(3) for i in range(40))

    start = {TopicPartition(topic, p): 35 for p in range(3)}
    tail = sorted(r.value.decode() for r in reader.records(start))
    assert tail == sorted(f"{p}:{i}" for p in range(3) for i in range(35, 40))


def test_fetches_one_record_and_knows_when_it_is_not_there(
    settings: Settings, consumer: KafkaConsumer
) -> None:
    topic = _topic(settings, "fetch", partitions=2, per_partition=5)
    reader = TopicReader(consumer, topic, timeout=10, wait_for_topic=10)
    assert reader.partitions(topic) == [0, 1]
    record = reader.fetch(topic, 1, 3)
    assert record is not None
    assert record.value == b"1:3"
    assert reader.fetch(topic, 0, 99) is None


def test_a_missing_topic_reads_as_empty(settings: Settings, consumer: KafkaConsumer) -> None:
    reader = TopicReader(consumer, settings.topic_prefix + "never-made", timeout=5)
    assert reader.partitions(settings.topic_prefix + "never-made") == []
    assert list(reader.records()) == []
