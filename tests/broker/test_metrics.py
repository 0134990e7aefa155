"""Metrics: a real ``referral route --metrics-port`` process scraped while referrals flow."""

from __future__ import annotations

import re
import signal
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.config import Settings
from broker.errors import ConfigError
from broker.kafka import clients
from broker.metrics import setup_metrics
from broker.network import Network
from broker.operator import topics
from broker.operator.topics import topic_stats
from broker.origin.outbox import Outbox, ReferralFacts
from broker.routing.router import Router
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry
from connectors.runtime import ConnectorRuntime
from tests.broker.routing.test_router_processes import batch
from tests.support.connectors import wait_for
from tests.support.kafka import publish, spawn_cli, start_router

pytestmark = pytest.mark.slow

#: The only labels a metric may carry (besides the exporter's own otel_scope_* ones).
LABELS = {
    "topic",
    "group",
    "partition",
    "organisation",
    "destination",
    "deadline",
    "kind",
    "stage",
    "reason",
    "le",
}


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics`` by (name, labels without the scope ones)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(
                sorted((k, v) for k, v in sample.labels.items() if not k.startswith("otel_"))
            )
            out[(sample.name, labels)] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_router_metrics_move_while_referrals_flow(provisioned: Settings, tmp_path: Path) -> None:
    names = provisioned.topic_names()
    group = provisioned.topic_prefix + "router"
    codec = Codec(EmbeddedRegistry())
    first, first_ids = batch(codec, 8)
    publish(provisioned, names.intake, first)
    log = tmp_path / "router.log"
    proc = spawn_cli(provisioned, "route", "--metrics-port", "0", log=log)
    try:
        wait_for(lambda: "metrics on http://127.0.0.1:" in log.read_text(), 30, "the endpoint")
        found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text())
        assert found is not None
        port = int(found.group(1))
        consumed = "messaging_client_consumed_messages_total"
        sent = "messaging_client_sent_messages_total"
        dead = "referral_dead_lettered_total"
        batches = "messaging_process_duration_seconds_count"
        to_de = {"topic": names.jurisdiction("DE"), "group": group}

        def first_settled() -> bool:
            now = scrape(port)
            return (
                value(now, consumed, topic=names.intake, group=group) >= 8
                and value(now, batches, group=group) > 0
            )

        wait_for(first_settled, 60, "8 referrals consumed and their batch timed")
        before = scrape(port)
        # More flow, and one record nobody can decode: the counters move, the dead letter counts.
        second, _ = batch(codec, 5)
        publish(provisioned, names.intake, [*second, (b"garbage-key", b"\x07not avro")])

        def second_settled() -> bool:
            now = scrape(port)
            return (
                value(now, consumed, topic=names.intake) >= 14
                and value(now, dead) >= 1
                and value(now, sent, **to_de) > value(before, sent, **to_de)
                and value(now, batches, group=group) > value(before, batches, group=group)
            )

        wait_for(second_settled, 60, "the second batch counted")

        def caught_up() -> bool:
            return value(scrape(port), "referral_consumer_lag", group=group) == 0

        # Every intake partition is read to its end and committed: the lag comes back to 0.
        wait_for(caught_up, 30, "the router's lag back to 0")
        after = scrape(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    assert value(before, consumed, topic=names.intake) == 8
    assert value(after, consumed, topic=names.intake) == 14
    assert value(before, sent, **to_de) > 0
    assert value(before, dead) == 0
    assert value(after, dead, topic=names.intake, stage="ROUTE_DECODE") == 1
    assert value(after, "referral_commit_duration_seconds_count", group=group) > 0
    assert value(after, "referral_ack_wait_duration_seconds_count", group=group) > 0
    assert value(after, "referral_producer_replacements_total") == 0
    lags = [ls for (n, ls), _ in after.items() if n == "referral_consumer_lag"]
    assert any(("topic", names.intake) in ls and ("group", group) in ls for ls in lags)
    # No label but the allowed ones, and no referral id anywhere in a label value.
    for name, labels in after:
        if name == "target_info":  # the resource: service name, SDK version
            continue
        assert {k for k, _ in labels} <= LABELS, name
        assert not any(rid in v for rid in first_ids for _, v in labels)


def test_a_taken_metrics_port_is_a_one_line_error() -> None:
    metrics = setup_metrics(0, "unit")
    try:
        assert metrics.port is not None
        with pytest.raises(ConfigError, match=f"metrics port {metrics.port}: "):
            setup_metrics(metrics.port, "unit")
    finally:
        metrics.shutdown()
    assert setup_metrics(None, "unit").enabled is False


def test_connector_metrics_count_deliveries_lag_and_the_healing_events(
    provisioned: Settings, network: Network
) -> None:
    names = provisioned.topic_names()
    group = provisioned.topic_prefix + "sink-police-de"
    codec = Codec(EmbeddedRegistry())
    metrics = setup_metrics(0, "connectors-police-de")
    assert metrics.port is not None
    runtime = ConnectorRuntime(provisioned, network, "police-de", codec, metrics=metrics)
    router = start_router(provisioned, network, codec)
    try:
        runtime.start()
        records, _ = batch(codec, 16)
        # Every fourth goes to the DE police (the others to FR, NL and SE).
        publish(provisioned, names.intake, [r for i, r in enumerate(records) if i % 4 == 0])
        consumed = "messaging_client_consumed_messages_total"
        batches = "messaging_process_duration_seconds_count"

        def delivered() -> bool:
            now = scrape(metrics.port or 0)
            lag = value(now, "referral_consumer_lag", group=group)
            return (
                value(now, consumed, group=group) >= 4
                and value(now, batches, group=group) > 0
                and lag == 0
            )

        wait_for(delivered, 60, "4 deliveries counted and committed")
        samples = scrape(metrics.port)
    finally:
        router.stop()
        runtime.stop()
        metrics.shutdown()
    assert value(samples, consumed, topic=names.jurisdiction("DE"), group=group) == 4
    assert value(samples, "referral_dead_lettered_total") == 0
    assert value(samples, "referral_security_failures_total") == 0
    lag_topics = {
        dict(ls)["topic"] for (n, ls), _ in samples.items() if n == "referral_consumer_lag"
    }
    assert names.jurisdiction("DE") in lag_topics
    # The healing events are exported (none happened): the operator can alert on a rise.
    assert value(samples, "referral_producer_replacements_total") == 0
    assert ("referral_consumer_rejoins_total", (("group", group),)) in samples
    # The origin's status feed is a component of its own, with its own group.
    status_group = provisioned.topic_prefix + "status-police-de"
    assert ("referral_consumer_rejoins_total", (("group", status_group),)) in samples
    # Four delivered, none answered beyond RECEIVED yet, none past the answer deadline.
    missed = (("deadline", "answer"), ("organisation", "police-de"))
    assert samples[("referral_deadlines_missed", missed)] == 0


def test_outbox_pending_and_overdue_receipts_per_destination(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    t0 = 1_900_000_000.0
    urgent = ReferralFacts(document={"envelope": {"priority": "URGENT"}})
    box.add("r-1", "c-1", "intake", b"v", [], ["police-nl", "police-de"], now=t0)
    box.add("r-2", "c-2", "intake", b"v", [], ["police-nl"], now=t0 + 7200, about=urgent)
    box.add("r-3", "c-3", "intake", b"v", [], ["police-de"], now=t0 + 7200)
    box.mark_received("r-3", "police-de", now=t0 + 7300)
    hour = 3600.0
    # Four hours on: r-1 (4 h old) is past a 3 h deadline, the urgent r-2 (2 h) past a 1 h one.
    assert box.waiting_by_destination(3 * hour, hour, now=t0 + 4 * hour) == {
        "police-nl": (2, 2),
        "police-de": (1, 1),
    }
    assert box.waiting_by_destination(5 * hour, 3 * hour, now=t0 + 4 * hour) == {
        "police-nl": (2, 0),
        "police-de": (1, 0),
    }
    assert sorted(box.waiting_for(["r-1", "r-2", "r-3"])) == ["police-de", "police-nl", "police-nl"]
    box.close()


def test_signature_failures_by_kind_and_republishes_per_destination() -> None:
    metrics = setup_metrics(0, "unit")
    try:
        loop = metrics.loop("sink-police-nl", "sink-police-nl")
        assert loop is not None
        loop.record_dead_lettered("to.NL", "VERIFY", "SignatureInvalid")
        loop.record_dead_lettered("to.NL", "UNSEAL", "SealError")
        loop.record_dead_lettered("to.NL", "SINK_DECODE", "CodecError")  # not a security failure
        metrics.record_republished("hl-a", ["police-nl", "police-de", "police-nl"])
        samples = scrape(metrics.port or 0)
    finally:
        metrics.shutdown()
    failures = "referral_security_failures_total"
    assert value(samples, failures) == 2
    assert value(samples, failures, kind="VERIFY") == 1
    assert value(samples, failures, kind="UNSEAL") == 1
    assert value(samples, "referral_dead_lettered_total") == 3
    republished = "referral_outbox_republished_total"
    assert value(samples, republished, organisation="hl-a", destination="police-nl") == 2
    assert value(samples, republished, destination="police-de") == 1


def test_topics_list_counts_the_lag_the_router_reports(
    provisioned: Settings, network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = provisioned.topic_names()
    group = provisioned.topic_prefix + "router"
    codec = Codec(EmbeddedRegistry())
    metrics = setup_metrics(0, "router")
    router = Router(provisioned, network, codec, metrics=metrics, max_records=4)
    # Each poll commits its own batch before returning: the broker's committed offsets
    # are the loop's acknowledged ones whenever the test looks.
    router.loop.async_commit = False
    router.loop.pipeline_ledger = False
    intake = {names.intake: 3}

    def both() -> tuple[float, int, int]:
        """The router's lag metric, and ``referral topics list``'s (read; ListOffsets)."""
        scraped = value(scrape(metrics.port or 0), "referral_consumer_lag", topic=names.intake)
        admin = clients.admin_client(provisioned)
        consumer = clients.consumer(provisioned, group_id=None, role="topics-count")
        try:
            read = topic_stats(admin, consumer, intake, group_prefix=provisioned.topic_prefix)
            with monkeypatch.context() as m:
                m.setattr(topics, "SMALL_TOPIC", 0)  # counted as a big topic would be
                listed = topic_stats(admin, consumer, intake, group_prefix=provisioned.topic_prefix)
        finally:
            consumer.close()
            admin.close()
        return scraped, read[names.intake].lag[group], listed[names.intake].lag[group]

    try:
        # A first 15, all routed: every partition has a committed offset, no lag.
        publish(provisioned, names.intake, batch(codec, 15)[0])
        wait_for(lambda: router.poll_once() == 0 and router.stats.records == 15, 60, "15")
        assert both() == (0, 0, 0)
        # 15 more, and one batch of at most 4 routed and committed: 11 or more behind.
        publish(provisioned, names.intake, batch(codec, 15)[0])
        wait_for(lambda: router.poll_once() > 0, 60, "a batch of the second 15")
        behind = 30 - router.stats.records
        assert 11 <= behind < 15
        assert both() == (behind, behind, behind)
        wait_for(lambda: router.poll_once() == 0 and router.stats.records == 30, 60, "30")
        assert both() == (0, 0, 0)
    finally:
        router.close()
        metrics.shutdown()


def test_a_replaced_producer_is_counted(provisioned: Settings, network: Network) -> None:
    names = provisioned.topic_names()
    codec = Codec(EmbeddedRegistry())
    metrics = setup_metrics(0, "router")
    router = Router(provisioned, network, codec, metrics=metrics)
    replaced = "referral_producer_replacements_total"
    try:
        publish(provisioned, names.intake, batch(codec, 3)[0])
        wait_for(lambda: router.poll_once() == 0 and router.stats.referrals == 3, 60, "3 routed")
        assert value(scrape(metrics.port or 0), replaced) == 0
        # The producer under the router closed (as a fatal state would leave it): replaced.
        router.producer.current().close(5)
        publish(provisioned, names.intake, batch(codec, 3)[0])
        wait_for(lambda: router.poll_once() == 0 and router.stats.referrals == 6, 60, "6 routed")
        assert value(scrape(metrics.port or 0), replaced) == 1
    finally:
        router.close()
        metrics.shutdown()
