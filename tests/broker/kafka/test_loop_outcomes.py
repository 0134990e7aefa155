"""The consume loop's outcomes no other test covers, each against the real embedded broker.

A handler that raises; a record whose send keeps failing (with and without others getting
through); a commit the group refuses; partitions revoked while a batch is handled.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.deadletter import (
    H_CLASS,
    H_OFFSET,
    H_PARTITION,
    H_STAGE,
    H_TOPIC,
    read_dead_letters,
    replay_dead_letter,
)
from broker.kafka.loop import BatchContext, ConsumeLoop, RecordContext
from tests.conftest import GROUP_TIMINGS
from tests.support.connectors import wait_for
from tests.support.kafka import header, read_topic

#: A header naming where the handler sends the record ("bad": a topic no broker accepts;
#: "bad-once": that, the first time it handles the record only); the handler raises on
#: ``x-raise``.
X_TO = "x-to"
X_RAISE = "x-raise"
#: A topic name the client refuses before queueing (ValueError): that record's send fails
#: every time while the others' are acknowledged (Tansu creates any valid topic named).
BAD_TOPIC = "not a topic name!"


class Echo:
    """Sends every record on to ``out`` (or where its ``x-to`` header says); raises on ``x-raise``.

    ``handled`` lists the ``(partition, offset)`` of every handling, in order.
    """

    def __init__(
        self,
        out: str,
        on_first: Callable[[], None] | None = None,
        failed_once: set[tuple[int, int]] | None = None,
    ) -> None:
        self.out = out
        self.handled: list[tuple[int, int]] = []
        self._on_first = on_first
        #: records already failed once ("bad-once"), shared by the handlers of one group
        self._failed_once = set() if failed_once is None else failed_once

    def handle(self, record: Any, ctx: RecordContext) -> None:
        """Send the record on (or raise, as its headers say)."""
        where = (record.partition, record.offset)
        self.handled.append(where)
        if self._on_first is not None:
            on_first, self._on_first = self._on_first, None
            on_first()
        if header(record, X_RAISE) is not None:
            raise RuntimeError("synthetic handler bug")
        to = header(record, X_TO)
        topic = self.out
        if to == "bad" or (to == "bad-once" and where not in self._failed_once):
            self._failed_once.add(where)
            topic = BAD_TOPIC
        ctx.send(topic, key=record.key, value=record.value, headers=list(record.headers))

    def before_commit(self, batch: BatchContext) -> None:
        """Nothing to make durable."""

    def times(self, partition: int, offset: int) -> int:
        """How often the record at ``partition``/``offset`` was handled."""
        return self.handled.count((partition, offset))


@pytest.fixture
def topics(settings: Settings) -> dict[str, str]:
    """This test's input (two partitions), output and dead-letter topics, created."""
    names = {
        "in": settings.topic_prefix + "in",
        "out": settings.topic_prefix + "out",
        "dlq": settings.topic_prefix + "dlq",
    }
    admin = clients.admin_client(settings)
    try:
        admin.create_topics([NewTopic(t, 2 if k == "in" else 1, 1) for k, t in names.items()])
    finally:
        admin.close()
    return names


@pytest.fixture
def out_producer(settings: Settings, topics: dict[str, str]) -> Iterator[KafkaProducer]:
    """The loop's producer (shared by everything its handler sends)."""
    producer = clients.producer(settings, role="loop")
    yield producer
    producer.close(5)


def _seed(
    settings: Settings, topic: str, records: list[tuple[int, list[tuple[str, bytes]]]]
) -> list[tuple[bytes, bytes]]:
    """Publish one record per ``(partition, headers)`` and wait; returns their keys and values."""
    producer = clients.producer(settings, role="seed")
    sent = []
    try:
        for partition, headers in records:
            key = uuid.uuid4().hex.encode()
            value = b"synthetic-" + uuid.uuid4().hex.encode()
            producer.send(topic, key=key, value=value, headers=headers, partition=partition).get(
                timeout=10
            )
            sent.append((key, value))
    finally:
        producer.close(5)
    return sent


def _loop(
    settings: Settings,
    handler: Echo,
    topics: dict[str, str],
    producer: KafkaProducer,
    group: str,
    **kw: Any,
) -> ConsumeLoop:
    consumer_kw = kw.pop("consumer_kw", {})

    def consumer() -> KafkaConsumer:
        return clients.consumer(
            settings, topics["in"], group_id=group, role="loop", **GROUP_TIMINGS, **consumer_kw
        )

    kw.setdefault("max_backoff_s", 0.4)
    return ConsumeLoop(
        handler,
        consumer=consumer,
        producer=producer,
        deadletter_topic=topics["dlq"],
        actor="test-loop",
        group=group,
        gc_tuning=False,
        **kw,
    )


def _step_until(loop: ConsumeLoop, done: Callable[[], bool], timeout: float = 20) -> None:
    stop = threading.Event()
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out: {loop.stats}"
        loop.step(stop)


def _committed(settings: Settings, group: str, topic: str, partitions: int = 2) -> list[int | None]:
    """The group's committed offset of each partition of ``topic``."""
    probe = clients.consumer(settings, group_id=group, role="probe")
    try:
        return [probe.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        probe.close()


def _ends(settings: Settings, topic: str, partitions: int = 2) -> list[int]:
    probe = clients.consumer(settings, group_id=None, role="probe")
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = probe.end_offsets(tps)
        return [int(ends[tp]) for tp in tps]
    finally:
        probe.close()


def test_a_handler_that_raises_dead_letters_the_record_intact_at_handler_and_flows_on(
    settings: Settings, topics: dict[str, str], out_producer: KafkaProducer
) -> None:
    bug = [(X_RAISE, b"1"), ("x-case", b"case-0001")]
    seeded = _seed(settings, topics["in"], [(0, []), (0, bug), (0, [])])
    handler = Echo(topics["out"])
    loop = _loop(settings, handler, topics, out_producer, "raises")
    try:
        _step_until(loop, lambda: handler.times(0, 2) >= 1 and loop.stats.batches >= 1)
    finally:
        loop.close()

    [letter] = read_topic(settings, topics["dlq"], at_least=1, idle=0.3)
    assert (letter.key, letter.value) == seeded[1], "the record is dead-lettered intact"
    assert header(letter, H_STAGE) == "HANDLER"
    assert header(letter, H_CLASS) == "builtins.RuntimeError"
    assert (header(letter, H_TOPIC), header(letter, H_PARTITION), header(letter, H_OFFSET)) == (
        topics["in"],
        "0",
        "1",
    )
    assert header(letter, "x-case") == "case-0001", "its own headers travel with it"
    out = read_topic(settings, topics["out"], at_least=2, idle=0.3)
    assert [r.value for r in out] == [seeded[0][1], seeded[2][1]], "the partition flows on"
    assert handler.times(0, 1) == 1, "handled once: not retried"
    assert loop.stats.dead_lettered == 1
    assert loop.stats.redelivered_records == 0
    assert _committed(settings, "raises", topics["in"])[0] == 3


def test_a_record_still_failing_after_max_attempts_is_dead_lettered_whole_and_replayable(
    settings: Settings, topics: dict[str, str], out_producer: KafkaProducer
) -> None:
    """Others in the batch get through, so the fault is the record's: SEND, then move on."""
    seeded = _seed(settings, topics["in"], [(0, []), (0, [(X_TO, b"bad")]), (0, []), (0, [])])
    handler = Echo(topics["out"])
    loop = _loop(settings, handler, topics, out_producer, "gives-up", max_attempts=3)
    try:
        _step_until(loop, lambda: loop.stats.dead_lettered >= 1)
    finally:
        loop.close()

    assert handler.times(0, 1) == 3, "handled exactly max_attempts times"
    [letter] = read_topic(settings, topics["dlq"], at_least=1, idle=0.3)
    assert (letter.key, letter.value) == seeded[1], "dead-lettered whole, not by reference"
    assert header(letter, H_STAGE) == "SEND"
    assert header(letter, X_TO) == "bad"
    assert header(letter, H_CLASS) == "builtins.ValueError"
    assert loop.stats.dead_lettered_by_reference == 0
    out = read_topic(settings, topics["out"], at_least=3, idle=0.3)
    assert {r.value for r in out} == {seeded[i][1] for i in (0, 2, 3)}
    assert _committed(settings, "gives-up", topics["in"])[0] == 4, "the loop moved on"

    probe = clients.consumer(settings, group_id=None, role="probe")
    try:
        [dead] = list(read_dead_letters(probe, topics["dlq"]))
    finally:
        probe.close()
    assert replay_dead_letter(out_producer, dead, [topics["in"]]) is None
    out_producer.flush(10)
    back = read_topic(settings, topics["in"], at_least=5, idle=0.3)[-1]
    assert (back.key, back.value, header(back, X_TO)) == (*seeded[1], "bad")
    assert header(back, H_STAGE) is None, "replayed without the error headers"


def test_a_record_failing_alone_is_retried_and_not_committed_until_others_get_through(
    settings: Settings, topics: dict[str, str], out_producer: KafkaProducer
) -> None:
    """Nothing else got through: the broker may be the fault, so the loop keeps retrying."""
    [stuck] = _seed(settings, topics["in"], [(0, [(X_TO, b"bad")])])
    handler = Echo(topics["out"])
    loop = _loop(settings, handler, topics, out_producer, "alone", max_attempts=2)
    try:
        _step_until(loop, lambda: handler.times(0, 0) >= 5)
        assert loop.stats.dead_lettered == 0, "never given up while nothing gets through"
        assert loop.stats.redelivered_records >= 4
        assert _committed(settings, "alone", topics["in"])[0] is None

        # A record behind it gets through: now the fault is the stuck record's.
        [after] = _seed(settings, topics["in"], [(0, [])])
        _step_until(loop, lambda: loop.stats.dead_lettered >= 1)
    finally:
        loop.close()
    [letter] = read_topic(settings, topics["dlq"], at_least=1, idle=0.3)
    assert (letter.key, letter.value, header(letter, H_STAGE)) == (*stuck, "SEND")
    assert [r.value for r in read_topic(settings, topics["out"], at_least=1, idle=0.3)] == [
        after[1]
    ]
    assert _committed(settings, "alone", topics["in"])[0] == 2


def test_a_refused_commit_is_logged_and_counted_and_its_records_repeat(
    settings: Settings,
    topics: dict[str, str],
    out_producer: KafkaProducer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The loop stalls mid-batch past its poll interval: it is dropped from the group, and
    the batch's commit is refused; the records come again and are committed then."""
    seeded = _seed(settings, topics["in"], [(0, []), (0, []), (1, [])])
    group = "refused"
    caplog.set_level(logging.INFO, logger="kafka.coordinator")
    caplog.set_level(logging.INFO, logger="referral.loop")  # (sets the capture level too)

    def stall_until_dropped() -> None:
        # kafka-python's heartbeat thread leaves the group once the poll interval passes.
        wait_for(
            lambda: any(
                "LeaveGroup request for group" in r.getMessage() and group in r.getMessage()
                for r in caplog.records
            ),
            15,
            "the stalled consumer leaving its group",
            step=0.05,
        )

    handler = Echo(topics["out"], on_first=stall_until_dropped)
    loop = _loop(
        settings,
        handler,
        topics,
        out_producer,
        group,
        consumer_kw={"max_poll_interval_ms": 1500},
    )
    try:
        _step_until(loop, lambda: loop.stats.commit_failures >= 1)
        _step_until(loop, lambda: len(handler.handled) >= 2 * len(seeded))
    finally:
        loop.close()
    failed = [r.getMessage() for r in caplog.records if "commit failed" in r.getMessage()]
    assert failed, "the refused commit is logged"
    assert all(m.startswith("test-loop commit failed") for m in failed), failed
    assert sorted(set(handler.handled)) == [(0, 0), (0, 1), (1, 0)]
    assert all(handler.handled.count(w) == 2 for w in set(handler.handled)), "repeated once"
    assert loop.stats.commit_failures >= 1
    assert loop.stats.dead_lettered == 0, loop.stats
    assert _committed(settings, group, topics["in"]) == [2, 1]


def test_partitions_revoked_mid_batch_lose_nothing_and_repeat_at_worst(
    settings: Settings, topics: dict[str, str], out_producer: KafkaProducer
) -> None:
    """A second member joins while the first handles a batch with unacknowledged records."""
    plan = [(p, [(X_TO, b"bad-once")] if i == 3 else []) for p in (0, 1) for i in range(8)]
    seeded = _seed(settings, topics["in"], plan)
    group = "revoked"
    failed_once: set[tuple[int, int]] = set()
    second = Echo(topics["out"], failed_once=failed_once)
    rival = _loop(settings, second, topics, out_producer, group)
    stop = threading.Event()
    thread = threading.Thread(target=rival.run, args=(stop,), daemon=True)

    def join_rival() -> None:
        thread.start()
        # Its first poll asks the group to rebalance.
        wait_for(lambda: rival.stats.poll_s > 0.0, 10, "the second member's first poll", step=0.05)

    first = Echo(topics["out"], on_first=join_rival, failed_once=failed_once)
    loop = _loop(settings, first, topics, out_producer, group)
    ends = _ends(settings, topics["in"])
    assert ends == [8, 8]
    try:
        _step_until(
            loop,
            lambda: bool(second.handled) and _committed(settings, group, topics["in"]) == ends,
            timeout=40,
        )
    finally:
        stop.set()
        thread.join(30)
        loop.close()
    assert not thread.is_alive()
    assert {p for p, _ in first.handled} == {0, 1}, "the first member had both partitions"
    assert second.handled, "the second member took over a partition"
    assert loop.stats.dead_lettered == rival.stats.dead_lettered == 0
    out = read_topic(settings, topics["out"], at_least=len(plan), idle=0.3)
    assert {r.value for r in out} == {v for _, v in seeded}, "nothing lost"
    assert _committed(settings, group, topics["in"]) == ends, "no commit went back"
