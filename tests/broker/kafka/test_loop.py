"""The one consume loop's policy, against the real embedded broker.

* A record whose dead letter is not acknowledged is not committed: after a
  restart of its consumer it is handled again and its dead letter lands.
* A record larger than the producer accepts is dead-lettered by reference and
  the records behind it — on its partition and on others — are routed once.
* The router commits a batch only once its ledger record is acknowledged too
  (awaited while the next batch is polled).
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
import uuid
from typing import Any

from kafka import TopicPartition

from broker.config import Settings
from broker.contracts import Delivery, Sink
from broker.errors import DeliveryError
from broker.kafka import clients
from broker.kafka.deadletter import (
    H_REFERENCE,
    H_STAGE,
    H_VALUE_SHA256,
    H_VALUE_SIZE,
    REFERENCE_PREFIX_BYTES,
)
from broker.ledger.events import decode_events
from broker.network import Network
from broker.receiver.inbox import Inbox
from broker.receiver.sink_driver import SinkDriver
from broker.routing.router import Router
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL, EmbeddedRegistry
from broker.wire.topics import Headers
from tests.support.factories import make_referral
from tests.support.kafka import header, read_topic


class RefusingSink(Sink):
    """A sink whose system refuses everything (so every record is dead-lettered)."""

    kind = "refusing"

    def deliver(self, delivery: Delivery) -> None:
        raise DeliveryError("synthetic refusal")


def _referral(codec: Codec, country: str = "FR") -> tuple[str, bytes]:
    datum = copy.deepcopy(make_referral().to_avro())
    rid = str(uuid.uuid4())
    env = datum["envelope"]
    env["referral_id"] = rid
    env["priority"] = "NORMAL"
    env["handling"] = {**env["handling"], "tlp": "GREEN", "recipients": []}
    # A victim located in the country: the hotline's referral goes to that country's police.
    env["jurisdictions"] = [{"country": country, "basis": "VICTIM_LOCATION", "derived": False}]
    return rid, codec.encode(REFERRAL, datum)


def _step_until(driver: SinkDriver, done: Any, timeout: float = 60) -> None:
    stop = threading.Event()
    deadline = time.monotonic() + timeout
    driver.open()
    try:
        while not done() and time.monotonic() < deadline:
            driver.step(stop)
    finally:
        driver.close()


def _end_offset(settings: Settings, tp: TopicPartition) -> int:
    consumer = clients.consumer(settings, group_id=None, role="probe")
    try:
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


def _committed(settings: Settings, group: str, tp: TopicPartition) -> int | None:
    consumer = clients.consumer(settings, group_id=group, role="probe")
    try:
        committed: int | None = consumer.committed(tp)
        return committed
    finally:
        consumer.close()


def test_unacknowledged_dead_letter_is_not_committed(
    provisioned: Settings, network: Network
) -> None:
    names = provisioned.topic_names()
    codec = Codec(EmbeddedRegistry())
    topic = names.jurisdiction("FR")
    rid, value = _referral(codec)
    seed = clients.producer(provisioned, role="seed")
    seed.send(
        topic,
        key=rid.encode(),
        value=value,
        partition=0,
        headers=[(Headers.DESTINATION_ORGS, b"police-fr"), (Headers.REFERRAL_ID, rid.encode())],
    ).get(timeout=10)
    seed.close()
    # A dead-letter topic the client refuses stands in for a dead-letter publish that is never
    # acknowledged (Tansu creates any topic a producer names, so a deleted one comes back).
    driver = SinkDriver(
        provisioned,
        "police-fr",
        codec,
        [topic],
        [RefusingSink()],
        Inbox.for_org(provisioned, "police-fr"),
    )
    driver.loop.deadletter_topic = "not a topic name!"
    _step_until(driver, lambda: driver.stats.redelivered_records >= 2)
    assert driver.stats.redelivered_records >= 2, "the record was never handled twice"
    assert driver.stats.records >= 2
    group = "sink-police-fr"  # namespaced by the settings prefix
    assert _committed(provisioned, group, TopicPartition(topic, 0)) in (None, 0)

    # Restart with the dead-letter topic right: the same record comes again and lands there.
    again = SinkDriver(
        provisioned,
        "police-fr",
        codec,
        [topic],
        [RefusingSink()],
        Inbox.for_org(provisioned, "police-fr"),
    )
    _step_until(again, lambda: again.stats.dead_lettered >= 1)
    dead = read_topic(provisioned, names.deadletter, at_least=1)
    assert [r.value for r in dead] == [value]
    assert header(dead[0], H_STAGE) == "DELIVER"
    assert again.stats.batches >= 1, again.stats
    assert _committed(provisioned, group, TopicPartition(topic, 0)) == 1, again.stats


def test_too_large_record_is_dead_lettered_by_reference_and_the_rest_flow(
    provisioned: Settings, network: Network
) -> None:
    names = provisioned.topic_names()
    codec = Codec(EmbeddedRegistry())
    parts = sorted(clients.producer(provisioned, role="meta").partitions_for(names.intake))
    assert len(parts) >= 2
    seed = clients.producer(provisioned, role="seed")
    before = [_referral(codec) for _ in range(20)]
    after = [_referral(codec) for _ in range(20)]
    other = [_referral(codec) for _ in range(20)]
    big_id, big_value = _referral(codec)
    padding = [("x-padding", b"p" * (96 * 1024))]  # forwarded headers make it too large
    for rid, value in before:
        seed.send(names.intake, key=rid.encode(), value=value, partition=parts[0])
    seed.send(
        names.intake, key=big_id.encode(), value=big_value, partition=parts[0], headers=padding
    )
    for rid, value in after:
        seed.send(names.intake, key=rid.encode(), value=value, partition=parts[0])
    for rid, value in other:
        seed.send(names.intake, key=rid.encode(), value=value, partition=parts[1])
    seed.flush(10)
    seed.close()

    # The router's producer accepts at most 64 KiB per request.
    small = clients.producer(provisioned, role="router", max_request_size=64 * 1024)
    router = Router(provisioned, network, codec, producer=small)
    stop = threading.Event()
    started = time.monotonic()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    want = {rid for rid, _ in before + after + other}
    try:
        routed: list[Any] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            routed = read_topic(provisioned, names.jurisdiction("FR"), at_least=60, idle=0.5)
            if {r.key.decode() for r in routed} >= want:
                break
        dead = read_topic(provisioned, names.deadletter, at_least=1, idle=0.5)
        settled = time.monotonic() - started
        # Let any retry that would repeat a record happen before counting.
        time.sleep(2)
        routed = read_topic(provisioned, names.jurisdiction("FR"), at_least=60, idle=1.0)
    finally:
        stop.set()
        thread.join(30)
        small.close()
    keys = [r.key.decode() for r in routed]
    assert set(keys) == want, "every other referral is routed"
    assert len(keys) == len(want), "…exactly once: no repeats caused by retries"
    assert big_id not in keys
    [letter] = dead
    assert header(letter, H_REFERENCE) == "1"
    assert header(letter, H_STAGE) == "UNSENDABLE"
    assert header(letter, H_VALUE_SIZE) == str(len(big_value))
    assert header(letter, H_VALUE_SHA256) == hashlib.sha256(big_value).hexdigest()
    assert letter.value == big_value[:REFERENCE_PREFIX_BYTES]
    assert letter.key == big_id.encode()
    assert header(letter, "x-padding") is None, "the headers that made it too large stay behind"
    assert router.stats.dead_lettered_by_reference == 1
    assert router.stats.redelivered_records == 0
    assert settled < 60


def test_router_commits_a_batch_only_after_its_ledger_record_is_acknowledged(
    provisioned: Settings, network: Network
) -> None:
    """The ledger record is checked with the next batch; unacknowledged, nothing commits."""
    names = provisioned.topic_names()
    codec = Codec(EmbeddedRegistry())
    rids = []
    group = "router-ledger-ack"
    tp = TopicPartition(names.intake, 0)
    start = _end_offset(provisioned, tp)
    seed = clients.producer(provisioned, role="seed")
    for _ in range(3):
        rid, value = _referral(codec, "DE")
        rids.append(rid)
        seed.send(names.intake, key=rid.encode(), value=value, partition=0).get(timeout=10)
    seed.close()
    router = Router(provisioned, network, codec, group_id=group)
    assert router.loop.ledger is not None
    router.loop.ledger.topic = "not a topic name!"  # a ledger send never acknowledged
    stop = threading.Event()
    deadline = time.monotonic() + 60
    router.open()
    try:
        while router.stats.retried_batches < 1 and time.monotonic() < deadline:
            router.loop.step(stop)
    finally:
        router.close()
    assert router.stats.retried_batches >= 1, router.stats
    assert _committed(provisioned, group, tp) in (None, 0)

    again = Router(provisioned, network, codec, group_id=group)
    deadline = time.monotonic() + 60
    again.open()
    try:
        while again.stats.batches < 1 and time.monotonic() < deadline:
            again.loop.step(stop)
    finally:
        again.close()
    assert _committed(provisioned, group, tp) == start + 3, again.stats
    ledger = [
        e
        for r in read_topic(provisioned, names.ledger, at_least=1)
        for e in decode_events(codec, r.value)
    ]
    assert {e["referral_id"] for e in ledger if e["event"] == "ROUTED"} >= set(rids)


def test_consume_loops_collect_garbage_rarely_and_leave_the_start_up_heap_alone() -> None:
    import gc

    from broker.kafka.loop import GC_THRESHOLDS, tune_gc

    tune_gc()  # a loop's open() does it once per process
    tune_gc()
    assert gc.get_threshold()[0] >= GC_THRESHOLDS[0]
    assert gc.get_freeze_count() > 0
    assert gc.isenabled(), "cycles are still collected"
