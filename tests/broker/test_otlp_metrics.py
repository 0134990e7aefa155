"""Metrics over OTLP/HTTP to a real receiver, configured only by ``OTEL_EXPORTER_OTLP_ENDPOINT``.

A ``referral route`` process with no scrape port pushes its meters to the base URL with
``/v1/metrics`` appended; the requests are decoded with opentelemetry-proto.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from broker.config import Settings
from broker.errors import ConfigError
from broker.metrics import DEFAULT_PROMETHEUS_PORT, metric_exporters_of, setup_metrics
from broker.network import Network
from broker.routing.router import Router
from broker.tracing import otlp_traces_url, otlp_url
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry
from tests.broker.routing.test_router_processes import batch, delivered_ids
from tests.broker.test_metrics import LABELS
from tests.support.connectors import wait_for
from tests.support.kafka import publish, spawn_cli
from tests.support.otlp_receiver import ReceivedPoint, otlp_receiver

pytestmark = pytest.mark.slow

#: Variables that would choose the exporters, endpoint or cadence otherwise: none is given.
_OTHER_VARIABLES = (
    "REFERRAL_METRICS_PORT",
    "REFERRAL_OTLP_ENDPOINT",
    "REFERRAL_TRACE_EXPORTER",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_METRICS_EXPORTER",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)

#: What a referral id, URL or content hash looks like in a label value.
_LEAK = re.compile(r"://|[0-9a-f]{32,}|[0-9a-f]{8}-[0-9a-f]{4}-", re.IGNORECASE)


def total(points: list[ReceivedPoint], metric: str, **labels: str) -> float:
    """The newest export's sum of ``metric``'s points whose labels include ``labels``.

    The exporter sends cumulative sums: each point of the last request counts, not all.
    """
    want = set(labels.items())
    latest: dict[tuple[tuple[str, str], ...], float] = {}
    for p in points:
        if p.metric == metric and want <= {(k, str(v)) for k, v in p.attributes.items()}:
            latest[tuple(sorted((k, str(v)) for k, v in p.attributes.items()))] = p.value
    return sum(latest.values())


def test_a_router_process_pushes_its_metrics_to_an_otlp_receiver(
    provisioned: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = provisioned.topic_names()
    group = provisioned.topic_prefix + "router"
    for name in _OTHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    records, ids = batch(Codec(EmbeddedRegistry()), 8)
    with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        publish(provisioned, names.intake, [*records, (b"garbage-key", b"\x07not avro")])
        log = tmp_path / "router.log"
        # No --metrics-port: OTLP is the only exporter.
        proc = spawn_cli(provisioned, "route", log=log)
        try:
            assert delivered_ids(provisioned, 8) == ids
        finally:
            # The last export is sent as the process stops (the interval is a minute).
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
        points = receiver.metric_points()
        paths = set(receiver.paths)
    text = log.read_text()
    assert "metrics on http" not in text
    # Both signals to the base URL with their own path appended (spans too), nowhere else.
    assert paths == {"/v1/metrics", "/v1/traces"}
    consumed = "messaging.client.consumed.messages"
    assert total(points, consumed, topic=names.intake, group=group) == 9
    sent = "messaging.client.sent.messages"
    sent_on = {p.attributes["topic"] for p in points if p.metric == sent}
    assert names.jurisdiction("DE") in sent_on
    dead = total(points, "referral.dead_lettered", topic=names.intake, stage="ROUTE_DECODE")
    assert dead == 1
    assert total(points, "messaging.process.duration", group=group) > 0
    # The lag is not in the last export: a router that left its group has no partitions.
    assert {p.service for p in points} == {"router"}
    assert "referral.router" in {p.scope for p in points}
    # No label but the allowed ones, and no referral id, URL or hash in any label value.
    for p in points:
        assert set(p.attributes) <= LABELS, p.metric
        for v in p.attributes.values():
            assert not _LEAK.search(str(v)), (p.metric, v)
            assert not any(rid in str(v) for rid in ids)


def test_the_export_interval_is_honoured_without_a_scrape_port(
    provisioned: Settings, network: Network
) -> None:
    names = provisioned.topic_names()
    group = provisioned.topic_prefix + "router"
    codec = Codec(EmbeddedRegistry())
    with otlp_receiver() as receiver:
        settings = provisioned.model_copy(
            update={
                "otel_exporter_otlp_endpoint": receiver.endpoint,
                "otel_metric_export_interval": 200,
            }
        )
        metrics = setup_metrics(None, "router", settings)
        assert metrics.enabled
        assert metrics.port is None
        router = Router(settings, network, codec, metrics=metrics)
        try:
            publish(provisioned, names.intake, batch(codec, 3)[0])
            wait_for(lambda: router.poll_once() == 0 and router.stats.records == 3, 60, "3 routed")

            def exported() -> bool:
                points = receiver.metric_points()
                lag = [p for p in points if p.metric == "referral.consumer.lag"]
                consumed = "messaging.client.consumed.messages"
                return (
                    total(points, consumed, topic=names.intake, group=group) == 3
                    and bool(lag)
                    and total(points, "referral.consumer.lag", group=group) == 0
                )

            # No shutdown, no flush: the periodic reader sends them on its own, lag included.
            wait_for(exported, 20, "the counter and the lag exported within the interval")
        finally:
            router.close()
            metrics.shutdown()
    assert set(receiver.paths) == {"/v1/metrics"}


def test_the_metrics_endpoint_follows_the_same_rules_as_the_traces_one() -> None:
    base = "http://collector.example.org:4318"
    assert otlp_url(Settings(), "metrics") == "http://localhost:4318/v1/metrics"
    assert otlp_url(Settings(otel_exporter_otlp_endpoint=base + "/"), "metrics") == (
        base + "/v1/metrics"
    )
    specific = "http://other.example.org:9999/custom"
    both = Settings(otel_exporter_otlp_endpoint=base, otel_exporter_otlp_metrics_endpoint=specific)
    assert otlp_url(both, "metrics") == specific
    assert otlp_traces_url(both) == base + "/v1/traces"
    # The project's own base URL wins; its earlier traces-only form is taken as the base.
    own = Settings(otlp_endpoint=base + "/v1/traces", otel_exporter_otlp_metrics_endpoint=specific)
    assert otlp_url(own, "metrics") == base + "/v1/metrics"
    assert otlp_traces_url(own) == base + "/v1/traces"


def test_which_metric_exporters_run() -> None:
    endpoint = Settings(otel_exporter_otlp_endpoint="http://c.example.org:4318")
    assert metric_exporters_of(None, 0) == (False, 0)
    assert metric_exporters_of(Settings(), None) == (False, None)
    assert metric_exporters_of(endpoint, None) == (True, None)
    assert metric_exporters_of(Settings(otlp_endpoint="http://c.example.org:4318"), 0) == (True, 0)
    spec = Settings(otel_exporter_otlp_metrics_endpoint="http://c.example.org:4318/m")
    assert metric_exporters_of(spec, None) == (True, None)
    listed = Settings(otel_metrics_exporter="otlp, prometheus")
    assert metric_exporters_of(listed, None) == (True, DEFAULT_PROMETHEUS_PORT)
    assert metric_exporters_of(listed, 0) == (True, 0)
    none = Settings(
        otel_metrics_exporter="none", otel_exporter_otlp_endpoint="http://c.example.org:4318"
    )
    assert metric_exporters_of(none, None) == (False, None)
    # The port asked for on the command line is served whatever the variable says.
    assert metric_exporters_of(none, 0) == (False, 0)
    with pytest.raises(ConfigError, match="OTEL_METRICS_EXPORTER='console' is not supported"):
        metric_exporters_of(Settings(otel_metrics_exporter="otlp,console"), None)
    assert setup_metrics(None, "unit", Settings()).enabled is False
