"""A loop whose group formed while its topic was missing joins again once the topic exists.

After an empty broker restart an operator may provision the topics a minute late; a
consumer that joined meanwhile was assigned ``[]`` and must not stay idle for good.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.admin import NewTopic

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.loop import BatchContext, ConsumeLoop, RecordContext
from tests.conftest import GROUP_TIMINGS


class Collect:
    """A handler that keeps the values it was handed."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def handle(self, record: Any, ctx: RecordContext) -> None:
        self.values.append(bytes(record.value))

    def before_commit(self, batch: BatchContext) -> None:
        """Nothing to make durable."""


def test_a_loop_assigned_nothing_joins_again_when_its_topic_appears(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="referral.kafka.consumer")
    topic = settings.topic_prefix + "late"
    made: list[KafkaConsumer] = []

    def consumer() -> KafkaConsumer:
        c = clients.consumer(settings, topic, group_id="late-group", role="test", **GROUP_TIMINGS)
        made.append(c)
        return c

    producer = clients.producer(settings, role="test")
    handler = Collect()
    loop = ConsumeLoop(
        handler,
        consumer=consumer,
        producer=producer,
        deadletter_topic=settings.topic_prefix + "dlq",
        actor="test",
        group="late-group",
        gc_tuning=False,
    )
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 30
        # The group forms with the topic missing: it settles on an empty assignment.
        while time.monotonic() < deadline and not (
            loop.consumer is not None and loop.consumer._coordinator.generation_if_stable()
        ):
            loop.step(stop)
        assert loop.consumer is not None
        assert loop.consumer.assignment() == set()

        admin = clients.admin_client(settings)
        try:
            admin.create_topics([NewTopic(topic, 2, 1)])
        finally:
            admin.close()
        for i in range(10):
            producer.send(topic, key=b"k%d" % i, value=b"late %d" % i)
        producer.flush(30)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(handler.values) < 10:
            loop.step(stop)
        assert sorted(handler.values) == sorted(b"late %d" % i for i in range(10))
        assert len(made) == 2, "the starved consumer was replaced by one new consumer"
        said = [r.getMessage() for r in caplog.records if "assigned nothing" in r.getMessage()]
        assert len(said) == 1
        assert topic in said[0]
    finally:
        loop.close()
        producer.close(5)
