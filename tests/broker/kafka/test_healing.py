"""Producers heal themselves; no client ever creates a topic.

The restart test runs its own embedded broker (it kills it and starts an empty
one on the same port); the others use the session broker.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from broker.config import Settings
from broker.kafka import clients, healing
from broker.kafka.embedded import EmbeddedBroker
from broker.kafka.healing import HealingProducer, fatal_reason
from broker.wire.topics import TopicNames
from tests.support.kafka import read_topic

#: A value no log line may quote.
CANARY = b"payload-canary-7f3a"


def _topics(settings: Settings) -> set[str]:
    admin = clients.admin_client(settings)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def _create(settings: Settings, topic: str, partitions: int = 3) -> None:
    admin = clients.admin_client(settings)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def _round(producer: HealingProducer, topic: str, n: int = 20) -> list[str]:
    """Send ``n`` records, flush, and name each outcome ("ok" or the error class)."""
    futures = [producer.send(topic, key=b"k%d" % i, value=CANARY) for i in range(n)]
    producer.flush(30)
    return ["ok" if f.succeeded() else type(f.exception).__name__ for f in futures]


@pytest.mark.slow
def test_a_producer_outlives_an_empty_restart_and_loses_nothing_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The new broker hands out producer ids from 1 again: the old producer must not
    reuse its id (the broker would answer DUPLICATE_SEQUENCE_NUMBER for records it
    never stored, which kafka-python reports as delivered)."""
    with EmbeddedBroker(log_path=tmp_path / "broker-1.log") as first:
        settings = Settings(bootstrap_servers=first.bootstrap, state_dir=tmp_path / "state")
        _create(settings, "heal.t", partitions=1)
        old = clients.producer(settings, role="heal-test")
        assert set(_round(old, "heal.t")) == {"ok"}
        port = first.port
    with EmbeddedBroker(port=port, log_path=tmp_path / "broker-2.log"):
        _create(settings, "heal.t", partitions=1)
        caplog.set_level(logging.WARNING, logger="referral.kafka.producer")
        fresh = clients.producer(settings, role="heal-fresh")  # takes producer id 1 again
        try:
            assert set(_round(fresh, "heal.t")) == {"ok"}
            sent: list[tuple[bytes, str]] = []
            for n in range(5):
                values = [CANARY + b"-%d-%d" % (n, i) for i in range(20)]
                futures = [old.send("heal.t", key=b"k", value=v) for v in values]
                old.flush(30)
                sent += [
                    (v, "ok" if f.succeeded() else type(f.exception).__name__)
                    for v, f in zip(values, futures, strict=True)
                ]
                if all(outcome == "ok" for _, outcome in sent[-20:]):
                    break
            stored = {r.value for r in read_topic(settings, "heal.t", at_least=20)}
            assert old.replacements == 1
            assert fatal_reason(old.current()) is None
        finally:
            old.close(10)
            fresh.close(10)
    lost = [v for v, outcome in sent if outcome == "ok" and v not in stored]
    assert lost == [], f"{len(lost)} records reported delivered were never stored"
    assert all(outcome == "ok" for _, outcome in sent[-20:]), "it delivers again"
    lines = [r.getMessage() for r in caplog.records if r.name == "referral.kafka.producer"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("heal-test producer replaced ("), lines
    assert CANARY.decode() not in caplog.text


def test_a_producer_closed_under_its_users_is_replaced(
    settings: Settings, topic_names: TopicNames
) -> None:
    topic = topic_names.intake
    _create(settings, topic)
    producer = clients.producer(settings, role="heal-closed")
    try:
        assert set(_round(producer, topic, 5)) == {"ok"}
        inner = producer.current()
        inner.close(5)
        assert fatal_reason(inner) == "closed"
        assert set(_round(producer, topic, 5)) == {"ok"}, "the send went to a new producer"
        assert producer.replacements == 1
        assert producer.current() is not inner
    finally:
        producer.close(5)
    with pytest.raises(Exception, match="closed"):
        producer.send(topic, key=b"k", value=b"v")
    assert producer.replacements == 1, "a producer closed by its owner is never replaced"


def test_no_client_creates_a_missing_topic(settings: Settings, topic_names: TopicNames) -> None:
    wanted, asked = topic_names.intake, topic_names.jurisdiction("NL")
    consumer = clients.consumer(settings, wanted, group_id="no-auto-create")
    producer = clients.producer(settings, role="no-auto-create", max_block_ms=1500)
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)  # metadata requests for the subscribed topic
        with pytest.raises(Exception, match="metadata"):
            producer.partitions_for(asked)
        assert consumer._client.cluster.config["allow_auto_create_topics"] is False
    finally:
        consumer.close()
        producer.close(5)
    assert not {wanted, asked} & _topics(settings), "a client's metadata request created a topic"


@pytest.mark.slow
def test_a_short_poll_sees_a_slow_group_join_through(
    settings: Settings, topic_names: TopicNames
) -> None:
    """A join the broker answers after ~3 s is not lost between two 100 ms polls.

    kafka-python 3.0.12 throws away a JoinGroup that completed between polls and
    sends a new one; polling every 200 ms against Tansu's delayed join answer, a
    status feed rejoined every 3 s for minutes. The healing consumer waits for a
    due join within one poll.
    """
    topic = topic_names.status("join-probe")
    _create(settings, topic)
    consumer = clients.consumer(settings, topic, group_id="join-probe")
    try:
        consumer.poll(timeout_ms=100)
        assert {tp.partition for tp in consumer.assignment()} == {0, 1, 2}
        # Joined in one poll, not by luck over many: another short poll changes nothing.
        consumer.poll(timeout_ms=100)
        assert len(consumer.assignment()) == 3
    finally:
        consumer.close()


def _send_and_poll_one(producer: HealingProducer, consumer: KafkaConsumer, topic: str) -> int:
    """Send one record and poll until it arrives (10 s at most); how many arrived."""
    producer.send(topic, value=b"one")
    producer.flush(10)
    got = 0
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        got = sum(len(r) for r in consumer.poll(timeout_ms=200).values())
    return got


def test_a_busy_consumer_fetches_with_a_short_wait_and_an_idle_one_with_the_long(
    settings: Settings, topic_names: TopicNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tansu 0.6 sleeps a fetch's whole wait when it first finds nothing, so the
    wait is added to a hop's latency; while records flow the consumer asks for the
    short wait, once idle for the long one again (fewer idle fetches)."""
    monkeypatch.setattr(healing, "BUSY_FOR_S", 0.5)
    topic = topic_names.status("fetch-pace")
    _create(settings, topic, partitions=1)
    paced = Settings(
        bootstrap_servers=settings.bootstrap_servers,
        topic_prefix=settings.topic_prefix,
        fetch_wait_ms=200,
        fetch_wait_busy_ms=7,
    )
    consumer = clients.consumer(paced, group_id=None)
    consumer.assign([TopicPartition(topic, 0)])
    producer = clients.producer(settings, role="fetch-pace")
    try:
        consumer.poll(timeout_ms=100)
        assert consumer.fetch_wait_ms == 200, "idle from the start"
        assert _send_and_poll_one(producer, consumer, topic) == 1
        assert consumer.fetch_wait_ms == 7, "records flowing: the short wait"
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            assert not consumer.poll(timeout_ms=100)
        consumer.poll(timeout_ms=50)
        assert consumer.fetch_wait_ms == 200, "idle again: the long wait"
    finally:
        consumer.close()
        producer.close(5)


def test_busy_pacing_is_off_when_the_busy_wait_is_zero(
    settings: Settings, topic_names: TopicNames
) -> None:
    topic = topic_names.status("fetch-plain")
    _create(settings, topic, partitions=1)
    plain = Settings(
        bootstrap_servers=settings.bootstrap_servers,
        topic_prefix=settings.topic_prefix,
        fetch_wait_busy_ms=0,
    )
    consumer = clients.consumer(plain, group_id=None)
    consumer.assign([TopicPartition(topic, 0)])
    producer = clients.producer(settings, role="fetch-plain")
    try:
        assert _send_and_poll_one(producer, consumer, topic) == 1
        assert consumer.fetch_wait_ms == 100, "records flowed, but pacing is off"
    finally:
        consumer.close()
        producer.close(5)


def test_a_send_to_a_known_partition_skips_kafka_pythons_checks_and_arrives_intact(
    settings: Settings, topic_names: TopicNames
) -> None:
    """Records to an explicit partition go straight to the accumulator (the router's
    hot path) and arrive exactly as sent; everything else takes ``KafkaProducer.send``."""
    topic = topic_names.status("fast-send")
    _create(settings, topic, partitions=3)
    producer = clients.producer(settings, role="fast-send")
    try:
        producer.send(topic, key=b"warm", value=b"up", partition=0)  # learns the metadata
        producer.flush(10)
        before = producer.fast_sends
        headers = [("referral.route_reason", b"HOSTING"), ("h\u00e9", b"\x00\xff")]
        futures = [
            producer.send(topic, key=b"k%d" % i, value=b"v%d" % i, headers=headers, partition=i % 3)
            for i in range(30)
        ]
        assert producer.fast_sends == before + 30, "explicit partitions take the fast path"
        producer.send(topic, key=b"by-key", value=b"partitioned by kafka-python")
        assert producer.fast_sends == before + 30, "no partition: the ordinary send"
        with pytest.raises(KafkaError):
            producer.send(topic, value=b"x" * (5 * 1024 * 1024), partition=1)
        assert producer.fast_sends == before + 30, "a record near the size limit: ordinary"
        producer.flush(10)
        assert all(f.succeeded() for f in futures)
        assert [f.value.partition for f in futures] == [i % 3 for i in range(30)]
        # A record that does not wake the sender goes out with the next flush.
        quiet = producer.send(topic, key=b"quiet", value=b"rides along", partition=2, wake=False)
        assert producer.fast_sends == before + 31
        producer.flush(10)
        assert quiet.succeeded()
    finally:
        producer.close(5)
    got = {r.key: r for r in read_topic(settings, topic, at_least=33)}
    assert got[b"quiet"].value == b"rides along"
    for i in range(30):
        record = got[b"k%d" % i]
        assert record.value == b"v%d" % i
        assert record.partition == i % 3
        assert list(record.headers) == [
            ("referral.route_reason", b"HOSTING"),
            ("h\u00e9", b"\x00\xff"),
        ]
    assert got[b"by-key"].value == b"partitioned by kafka-python"
