"""What one delivery costs the sink in bookkeeping: SQLite statements, transactions, records.

A signed, sealed referral delivered to the SQLite case table touches three
databases: the inbox (dedup, refusals, failures, the delivery row), the case
table (the case row and its version row) and the handling log. Every statement
is traced (``sqlite3.Connection.set_trace_callback``) on the real broker; the
ledger topic shows how many ledger records the deliveries cost.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from broker.config import Settings
from broker.contracts import Delivery, Sink
from broker.ledger.events import decode_events
from broker.network import Network
from broker.origin.outbox import Outbox
from broker.origin.publisher import Prepared, Publisher
from broker.receiver.inbox import Inbox
from broker.receiver.sink_driver import SinkDriver
from broker.security.rules import ReceiverSecurity
from broker.security.signing import SIGNATURE_HEADER
from broker.wire.codec import Codec
from broker.wire.topics import Headers
from connectors.sqlite_sink import SqliteCaseConfig, SqliteCaseSink
from tests.support.connectors import referral_json, wait_for
from tests.support.kafka import header, provision_network, read_topic
from tests.support.security import give_keys, keyed_network

ORGS = ("hl-a", "police-de")
N = 6


@pytest.fixture
def keyed(provisioned: Settings, tmp_path: Path) -> tuple[Settings, Network]:
    trust = tmp_path / "trust.toml"
    give_keys(provisioned, trust, *ORGS)
    network = keyed_network(trust)
    provision_network(provisioned, network)
    return provisioned, network


class Trace:
    """Every statement run on some connections, by connection name."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, str]] = []

    def attach(self, name: str, conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(lambda sql: self.statements.append((name, sql)))

    def clear(self) -> None:
        self.statements.clear()

    def count(self, starting: str | None = None, db: str | None = None) -> int:
        return sum(
            1
            for name, sql in self.statements
            if (starting is None or sql.lstrip().upper().startswith(starting))
            and (db is None or name == db)
        )

    def by_db(self) -> Counter[str]:
        return Counter(name for name, _ in self.statements)


def _address(producer: KafkaProducer, topic: str, prepared: Prepared, org: str) -> None:
    """What the router does: the original bytes and signature, with the destination orgs."""
    rid = prepared.referral_id
    producer.send(
        topic,
        key=rid.encode(),
        value=prepared.value,
        headers=[
            (Headers.REFERRAL_ID, rid.encode()),
            (Headers.DESTINATION_ORGS, org.encode()),
            (Headers.ROUTE_REASON, b"test"),
            *prepared.security_headers,
        ],
    )


def _drive(driver: SinkDriver, done: Any) -> None:
    def step() -> bool:
        driver.poll_once()
        return bool(done())

    wait_for(step, 30, "sink driver", step=0)


def test_a_delivery_costs_a_bounded_number_of_statements_and_ledger_records(
    keyed: tuple[Settings, Network], codec: Codec, producer: KafkaProducer
) -> None:
    settings, network = keyed
    names = settings.topic_names()
    topic = names.jurisdiction("DE")
    pub = Publisher(settings, network, "hl-a", codec, producer, Outbox.for_org(settings, "hl-a"))
    rids = []
    for _ in range(N):
        data = referral_json("hl-a", "DE")
        rid = data["envelope"]["referral_id"]
        rids.append(rid)
        _address(producer, topic, pub.prepare(data), "police-de")
    producer.flush(10)
    ledger_before = len(read_topic(settings, names.ledger, idle=0.3))

    sink = SqliteCaseSink(SqliteCaseConfig(path="cases.sqlite3"), settings)
    inbox = Inbox(Path(settings.state_dir) / "inbox.sqlite3")
    trace = Trace()
    traced: dict[str, Trace] = {}
    batches: dict[str, int] = {}
    for group in ("sink-police-de", "sink-police-de-replay"):
        security = ReceiverSecurity.load(settings, network, "police-de")
        driver = SinkDriver(
            settings,
            "police-de",
            codec,
            [topic],
            [sink],
            inbox,
            producer=producer,
            group_id=group,
            security=security,
        )
        driver.open()
        assert sink._db is not None
        assert security.handling is not None
        trace = traced[group] = Trace()
        trace.attach("inbox", inbox._db._conn)
        trace.attach("cases", sink._db._conn)
        trace.attach("handling", security.handling._db._conn)
        try:
            stats = driver.stats
            _drive(driver, lambda s=stats: s.delivered + s.duplicates >= N)
        finally:
            inbox._db._conn.set_trace_callback(None)
            sink._db._conn.set_trace_callback(None)
            security.handling._db._conn.set_trace_callback(None)
            driver.close()
        batches[group] = driver.stats.batches
    sink.close()
    inbox.close()

    first, repeat = traced["sink-police-de"], traced["sink-police-de-replay"]
    # A delivery: one look-up in the inbox (was 2 look-ups and 2 transactions), its row
    # written with the consumed batch's in one transaction; one transaction for the case
    # and its version row, one in the handling log.
    assert first.count("SELECT", "inbox") == N
    assert first.count("INSERT", "inbox") == N
    assert 1 <= first.count("BEGIN", "inbox") == first.count("COMMIT", "inbox")
    assert first.count("BEGIN", "inbox") <= batches["sink-police-de"]
    assert first.by_db()["inbox"] <= 2 * N + 2 * batches["sink-police-de"]
    assert first.by_db()["cases"] == 4 * N
    assert first.by_db()["handling"] == 3 * N
    # A repeat: the look-up and the counted duplicate; nothing written to the case table.
    assert repeat.by_db()["cases"] == 0
    assert repeat.count("SELECT") <= 2 * N
    assert len(repeat.statements) <= 9 * N
    with sqlite3.connect(Path(settings.state_dir) / "cases.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == N

    # The handover events of a consumed batch are one signed ledger record, not one each.
    ledger = read_topic(settings, names.ledger, at_least=ledger_before + 1, idle=0.5)[
        ledger_before:
    ]
    events = [e for r in ledger for e in decode_events(codec, r.value)]
    assert len(ledger) <= sum(batches.values()) < 2 * N
    assert sorted(e["referral_id"] for e in events if e["event"] == "DELIVERED") == sorted(rids)
    assert len([e for e in events if e["event"] == "DUPLICATE_SKIPPED"]) == N
    assert {e["actor"] for e in events} == {"police-de"}
    assert all(header(r, SIGNATURE_HEADER) for r in ledger)


class FlushFails(Sink):
    """A sink that keeps what it is given and cannot make it durable the first ``fail`` times."""

    kind = "collect"

    def __init__(self, fail: int) -> None:
        self.got: list[str] = []
        self.fail = fail
        self.flushes = 0

    def deliver(self, delivery: Delivery) -> None:
        self.got.append(delivery.referral_id)

    def flush(self) -> None:
        self.flushes += 1
        if self.fail:
            self.fail -= 1
            raise OSError("disk away")


def test_receipts_leave_only_once_the_sinks_are_durable(
    keyed: tuple[Settings, Network], codec: Codec, producer: KafkaProducer
) -> None:
    settings, network = keyed
    names = settings.topic_names()
    topic = names.jurisdiction("DE")
    pub = Publisher(settings, network, "hl-a", codec, producer, Outbox.for_org(settings, "hl-a"))
    data = referral_json("hl-a", "DE")
    rid = data["envelope"]["referral_id"]
    _address(producer, topic, pub.prepare(data), "police-de")
    producer.flush(10)
    sink = FlushFails(fail=1)
    inbox = Inbox(Path(settings.state_dir) / "inbox.sqlite3")
    driver = SinkDriver(
        settings,
        "police-de",
        codec,
        [topic],
        [sink],
        inbox,
        producer=producer,
        security=ReceiverSecurity.load(settings, network, "police-de"),
    )
    driver.open()
    try:
        _drive(driver, lambda: sink.flushes >= 1)
        assert sink.got == [rid]
        assert driver.stats.retried_batches == 1, "the batch is handled again, not committed"
        assert read_topic(settings, names.status_intake, idle=0.5) == [], "nothing answered"
        assert inbox.delivered() == [], "not remembered as delivered: the sink may lose it"
        _drive(driver, lambda: sink.flushes >= 2 and driver.stats.retried_batches == 1)
    finally:
        driver.close()
    assert sink.got == [rid, rid], "handed again once the first could not be made durable"
    assert inbox.delivered() == [rid]
    receipts = read_topic(settings, names.status_intake, at_least=1)
    assert [header(r, Headers.REFERRAL_ID) for r in receipts] == [rid]
    inbox.close()
