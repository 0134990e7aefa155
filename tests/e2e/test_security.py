"""Sealed and signed referrals end to end on the real broker: router, connectors, attacks.

Every organisation of the test network has keys; the network allows no plain
referrals. A hotline's referral concerning DE and NL is sealed for police-de and
police-nl only. The tests then play the operator of the cluster: reading the
raw topics, re-addressing a record to a third organisation, altering one byte.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.contracts import Delivery, Sink
from broker.kafka.deadletter import H_CONNECTOR, H_MESSAGE, H_STAGE
from broker.network import Network
from broker.origin.outbox import Outbox
from broker.origin.publisher import Publisher
from broker.receiver.inbox import Inbox
from broker.receiver.sink_driver import SinkDriver
from broker.security.rules import ReceiverSecurity
from broker.security.signing import SIGNATURE_HEADER
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL
from broker.wire.topics import Headers
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import (
    ENV,
    codec_for,
    inbox_files,
    referral_json,
    wait_for,
)
from tests.support.kafka import header, provision_network, publish, read_topic, start_router
from tests.support.security import case_content, give_keys, keyed_network

pytestmark = pytest.mark.slow

ORGS = ("hl-a", "hl-b", "police-nl", "police-de", "police-fr", "secretariat")


class Collect(Sink):
    """A sink that keeps what it is given."""

    kind = "collect"

    def __init__(self) -> None:
        self.got: list[Delivery] = []

    def deliver(self, delivery: Delivery) -> None:
        self.got.append(delivery)


@pytest.fixture
def keyed(provisioned: Settings, tmp_path: Path) -> tuple[Settings, Network]:
    """Keys for every organisation, a no-plain network naming their trust file, its topics."""
    trust = tmp_path / "trust.toml"
    give_keys(provisioned, trust, *ORGS)
    network = keyed_network(trust)
    provision_network(provisioned, network)
    return provisioned, network


def _driver(
    settings: Settings,
    network: Network,
    codec: Codec,
    org: str,
    topics: list[str],
    sink: Sink,
    group: str,
) -> SinkDriver:
    driver = SinkDriver(
        settings,
        org,
        codec,
        topics,
        [sink],
        Inbox(Path(settings.state_dir) / f"{group}.sqlite3"),
        group_id=group,
        security=ReceiverSecurity.load(settings, network, org),
    )
    driver.open()
    return driver


def _drain(driver: SinkDriver, done: Any, timeout: float = 30) -> None:
    def step() -> bool:
        driver.poll_once()
        return bool(done())

    wait_for(step, timeout, f"sink driver of {driver.org_id}", step=0)


def _dead(settings: Settings, stage: str, at_least: int = 1) -> list[Any]:
    records = read_topic(settings, settings.topic_names().deadletter, at_least=at_least)
    return [r for r in records if header(r, H_STAGE) == stage]


def _received(settings: Settings) -> set[tuple[str, str]]:
    out = set()
    for f in (Path(settings.state_dir) / "orgs" / "hl-a" / "status").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            s = json.loads(line)
            if s["status"] == "RECEIVED":
                out.add((s["referral_id"], s["emitted_by"]))
    return out


def test_sealed_referral_reaches_its_two_recipients_and_nobody_else_can_read_it(
    keyed: tuple[Settings, Network],
) -> None:
    settings, network = keyed
    names = settings.topic_names()
    codec = codec_for(settings)
    data = referral_json(
        "hl-a",
        "DE",
        jurisdictions=[
            {"country": "DE", "basis": "HOSTING", "derived": False},
            {"country": "NL", "basis": "VICTIM_LOCATION", "derived": False},
        ],
    )
    rid = data["envelope"]["referral_id"]
    secrets = case_content(data)
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        runtimes = {}
        for org in ("hl-a", "police-nl", "police-de", "police-fr"):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV)
            stack.callback(rt.stop)
            runtimes[org] = rt.start()
        drop = Path(settings.state_dir) / "orgs" / "hl-a" / "drop"
        (drop / "one.json").write_text(json.dumps([data]))

        def nl_document() -> dict[str, Any] | None:
            files = inbox_files(settings, "police-nl")
            return json.loads(files[0].read_text())["referral"] if files else None

        wait_for(lambda: nl_document() is not None, 60, "police-nl delivery")
        wait_for(lambda: runtimes["hl-a"].outbox.is_complete(rid), 30, "both receipts at hl-a")
        assert _received(settings) == {(rid, "police-de"), (rid, "police-nl")}
        # Both recipients decrypted and verified: their systems got the plain body.
        doc = nl_document()
        assert doc is not None
        assert doc["body"]["items"][0]["url"] == data["body"]["items"][0]["url"]
        assert doc["body"]["summary"] == data["body"]["summary"]
        de_db = Path(settings.state_dir) / "orgs" / "police-de" / "cases.sqlite3"
        with sqlite3.connect(de_db) as db:
            [(stored,)] = db.execute("SELECT referral FROM cases").fetchall()
        assert (
            json.loads(stored)["body"]["items"][0]["hashes"] == data["body"]["items"][0]["hashes"]
        )
        assert runtimes["police-fr"].sink_driver is not None
        assert runtimes["police-fr"].sink_driver.stats.delivered == 0

    # -- a raw consumer of the topics sees no URL, hash or summary ---------------------------
    intake = read_topic(settings, names.intake, at_least=1)
    lanes = read_topic(settings, names.jurisdiction("DE"), at_least=1) + read_topic(
        settings, names.jurisdiction("NL"), at_least=1
    )
    assert len(intake) == 1
    assert len(lanes) == 2
    for record in intake + lanes:
        raw = record.value + b"".join(v for _, v in record.headers)
        assert not [s for s in secrets if s in raw], "case content readable on the wire"
        assert header(record, SIGNATURE_HEADER)
        assert codec.decode(record.value)[1]["body"]["recipients"][0]["org"] == "police-de"

    # -- the third organisation's sink, in its own group on the same topics ------------------
    routed_de = next(r for r in lanes if r.topic == names.jurisdiction("DE"))
    snoop = Collect()
    third = _driver(
        settings,
        network,
        codec,
        "police-fr",
        [names.jurisdiction("DE"), names.jurisdiction("NL")],
        snoop,
        "snoop-police-fr",
    )
    try:
        _drain(third, lambda: third.stats.skipped >= 2)  # not addressed to it: skipped
        # The cluster operator re-addresses the record to police-fr: it still cannot read it.
        readdressed = [
            (k, b"police-fr" if k == Headers.DESTINATION_ORGS else v) for k, v in routed_de.headers
        ]
        publish(settings, names.jurisdiction("DE"), [(routed_de.key, routed_de.value)], readdressed)
        _drain(third, lambda: third.stats.dead_lettered >= 1)
    finally:
        third.close()
    assert snoop.got == []
    # The routing decision of the signed envelope puts police-de on that lane, not police-fr
    # (and the body is not sealed for police-fr either: it could not have read it).
    [dead] = _dead(settings, "ROUTE_CHECK")
    assert header(dead, H_CONNECTOR) == "police-fr"
    message = header(dead, H_MESSAGE) or ""
    assert message == (
        "misrouted: on the normal lane of DE the signed envelope is for police-de, not police-fr"
    )
    assert dead.value == routed_de.value, "dead letter keeps the original bytes"


def test_one_altered_byte_is_rejected_with_the_signature_reason(
    keyed: tuple[Settings, Network],
) -> None:
    settings, network = keyed
    names = settings.topic_names()
    codec = codec_for(settings)
    outbox = Outbox.for_org(settings, "hl-a")
    from broker.kafka.clients import producer as make_producer

    producer = make_producer(settings, role="test-publisher")
    try:
        publisher = Publisher(settings, network, "hl-a", codec, producer, outbox)
        result = publisher.publish([("row", referral_json("hl-a", "DE"))])
        assert result.ok
        assert result.published[0].sent
    finally:
        producer.close()
        outbox.close()
    router = start_router(settings, network, codec)
    try:
        [routed] = read_topic(settings, names.jurisdiction("DE"), at_least=1)
    finally:
        router.stop()
    tampered = bytearray(routed.value)
    tampered[len(tampered) // 2] ^= 0x01
    publish(settings, names.jurisdiction("DE"), [(routed.key, bytes(tampered))], routed.headers)
    sink = Collect()
    driver = _driver(
        settings, network, codec, "police-de", [names.jurisdiction("DE")], sink, "sink-de"
    )
    try:
        _drain(driver, lambda: len(sink.got) == 1 and driver.stats.dead_lettered == 1)
    finally:
        driver.close()
    assert sink.got[0].value == routed.value, "the intact record is delivered"
    [dead] = _dead(settings, "VERIFY")
    assert (header(dead, H_MESSAGE) or "").startswith("bad signature: the record is not what hl-a")
    assert dead.value == bytes(tampered)


def test_plain_referral_refused_at_publish_and_dead_lettered_at_the_sink(
    keyed: tuple[Settings, Network], tmp_path: Path
) -> None:
    settings, network = keyed
    names = settings.topic_names()
    codec = codec_for(settings)
    keyless = Settings(
        bootstrap_servers=settings.bootstrap_servers,
        state_dir=tmp_path / "keyless",
        network_file=settings.network_file,
        topic_prefix=settings.topic_prefix,
    )
    outbox = Outbox.for_org(keyless, "hl-b")
    from broker.kafka.clients import producer as make_producer

    producer = make_producer(keyless, role="test-publisher")
    try:
        publisher = Publisher(keyless, network, "hl-b", codec, producer, outbox)
        result = publisher.publish([("row", referral_json("hl-b", "DE"))])
    finally:
        producer.close()
        outbox.close()
    assert result.published == []
    [rejected] = result.rejected
    assert rejected.problems[0].startswith("(record): plain referrals are not allowed")

    # Written past the publisher straight onto the lane: the sink dead-letters it.
    plain = codec.encode(REFERRAL, referral_json_avro("hl-b"))
    publish(
        settings,
        names.jurisdiction("DE"),
        [(b"k", plain)],
        [(Headers.DESTINATION_ORGS, b"police-de"), (Headers.REFERRAL_ID, b"x")],
    )
    sink = Collect()
    driver = _driver(
        settings, network, codec, "police-de", [names.jurisdiction("DE")], sink, "sink-de"
    )
    try:
        _drain(driver, lambda: driver.stats.dead_lettered == 1)
    finally:
        driver.close()
    assert sink.got == []
    [dead] = _dead(settings, "VERIFY")
    assert header(dead, H_MESSAGE) == "missing signature on a referral from hl-b"


def referral_json_avro(org: str) -> dict[str, Any]:
    """A plain referral of ``org`` in Avro form."""
    from tests.support.factories import make_referral

    return make_referral(origin_org=org, origin_country="DE").to_avro()
