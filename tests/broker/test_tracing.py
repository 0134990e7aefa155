"""Tracing: W3C context through Kafka headers, messaging span conventions, no payload."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind

from broker.config import Settings
from broker.errors import ConfigError
from broker.network import Network
from broker.tracing import (
    Tracing,
    extract,
    inject,
    otlp_traces_url,
    resource_attributes,
    safe_attributes,
    setup_tracing,
    trace_exporter_of,
)
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL, EmbeddedRegistry
from broker.wire.topics import Headers
from tests.support.factories import make_referral
from tests.support.kafka import header, publish, read_topic, start_router


def memory_tracing(service: str) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider, service), exporter


def test_headers_round_trip_the_trace_context() -> None:
    tracing, _ = memory_tracing("t")
    headers: list[tuple[str, bytes]] = [("other", b"x")]
    with tracing.send("topic-a", headers) as span:
        assert span is not None
        sent = span.get_span_context()
    parent = [v for k, v in headers if k == "traceparent"]
    assert len(parent) == 1
    assert parent[0].decode().startswith(f"00-{sent.trace_id:032x}-{sent.span_id:016x}-")
    ctx = extract(headers)
    again: list[tuple[str, bytes]] = []
    inject(again, ctx)
    assert again == [("traceparent", parent[0])]


def test_disabled_tracing_passes_the_incoming_context_on_unchanged() -> None:
    off = Tracing(None, "t")
    incoming = [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]
    out: list[tuple[str, bytes]] = []
    with off.send("x", out, parent=extract(incoming)):
        pass
    assert out == incoming


def test_only_allow_listed_attributes_are_recorded() -> None:
    attrs = safe_attributes(
        {"referral.id": "r1", "url": "https://x.example.org/a", "summary": "text", "hash": "ab"}
    )
    assert attrs == {"referral.id": "r1"}


def test_jsonl_exporter_writes_otlp_json_requests(tmp_path: Path) -> None:
    settings = Settings(trace_exporter="jsonl", trace_file=tmp_path / "spans.jsonl")
    tracing = setup_tracing(settings, "unit")
    with tracing.send("topic-b", []) as parent:
        assert parent is not None
        parent_ctx = parent.get_span_context()
    linked = Link(parent_ctx)
    with tracing.send("topic-c", [], links=[linked]) as child:
        assert child is not None
        child_ctx = child.get_span_context()
    tracing.shutdown()
    lines = (tmp_path / "spans.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one ExportTraceServiceRequest per export (per span here)
    raw = json.loads(lines[1])
    (resource_spans,) = raw["resourceSpans"]
    (span,) = resource_spans["scopeSpans"][0]["spans"]
    # The OTLP JSON rules: hex ids, integer enums, 64-bit times as strings, camelCase.
    assert span["traceId"] == f"{child_ctx.trace_id:032x}"
    assert span["spanId"] == f"{child_ctx.span_id:016x}"
    assert span["links"][0]["spanId"] == f"{parent_ctx.span_id:016x}"
    assert span["kind"] == Span.SPAN_KIND_PRODUCER
    assert isinstance(span["startTimeUnixNano"], str)
    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0
    # Back into the protobuf message (ids to protobuf JSON's base64 first, as a collector does).
    for message in (span, *span["links"]):
        for name in ("traceId", "spanId", "parentSpanId"):
            if name in message:
                message[name] = base64.b64encode(bytes.fromhex(message[name])).decode()
    request = json_format.ParseDict(raw, ExportTraceServiceRequest())
    decoded = request.resource_spans[0].scope_spans[0].spans[0]
    assert decoded.name == "send topic-c"
    assert decoded.trace_id == child_ctx.trace_id.to_bytes(16, "big")
    assert decoded.links[0].span_id == parent_ctx.span_id.to_bytes(8, "big")
    attrs = {a.key: a.value.string_value for a in decoded.attributes}
    assert attrs["messaging.system"] == "kafka"
    resource = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "unit"
    # Strict parsing of the line as written (every field name is one OTLP knows).
    json_format.Parse(lines[0], ExportTraceServiceRequest())


def test_router_spans_continue_the_publishers_trace(
    provisioned: Settings, network: Network
) -> None:
    codec = Codec(EmbeddedRegistry())
    names = provisioned.topic_names()
    source, source_spans = memory_tracing("hl-nl")
    datum = copy.deepcopy(make_referral().to_avro())
    rid = str(uuid.uuid4())
    datum["envelope"]["referral_id"] = rid
    datum["envelope"]["priority"] = "NORMAL"
    datum["envelope"]["handling"] = {
        **datum["envelope"]["handling"],
        "tlp": "GREEN",
        "recipients": [],
    }
    datum["envelope"]["jurisdictions"] = [
        {"country": "DE", "basis": "HOSTING", "derived": False},
        {"country": "FR", "basis": "VICTIM_LOCATION", "derived": False},
    ]
    headers: list[tuple[str, bytes]] = []
    with source.send(names.intake, headers, attributes={"referral.id": rid}):
        pass
    publish(provisioned, names.intake, [(rid.encode(), codec.encode(REFERRAL, datum))], headers)
    tracing, spans = memory_tracing("router")
    router = start_router(provisioned, network, codec, tracing=tracing)
    try:
        de = read_topic(provisioned, names.jurisdiction("DE"), at_least=1)
        fr = read_topic(provisioned, names.jurisdiction("FR"), at_least=1)
    finally:
        router.stop()
    root = source_spans.get_finished_spans()[0]
    trace_id = root.context.trace_id
    finished = spans.get_finished_spans()
    by_name = {s.name: s for s in finished}
    process = by_name[f"process {names.intake}"]
    assert process.kind == SpanKind.CONSUMER
    assert process.context.trace_id == trace_id
    assert process.parent is not None
    assert process.parent.span_id == root.context.span_id
    assert process.attributes["messaging.consumer.group.name"] == (
        provisioned.topic_prefix + "router"
    )
    for topic, records in ((names.jurisdiction("DE"), de), (names.jurisdiction("FR"), fr)):
        send = by_name[f"send {topic}"]
        assert send.kind == SpanKind.PRODUCER
        assert send.parent is not None
        assert send.parent.span_id == process.context.span_id
        assert send.attributes["messaging.destination.name"] == topic
        # The forwarded record carries the router's send span as its parent.
        traceparent = header(records[0], Headers.TRACEPARENT)
        assert traceparent is not None
        assert traceparent.startswith(f"00-{trace_id:032x}-{send.context.span_id:016x}-")
    ledger_send = by_name[f"send {names.ledger}"]
    assert [link.context.span_id for link in ledger_send.links] == [process.context.span_id]


def test_otlp_endpoint_is_a_base_url_unless_signal_specific() -> None:
    base = Settings(otel_exporter_otlp_endpoint="http://collector.invalid:4318/")
    assert otlp_traces_url(base) == "http://collector.invalid:4318/v1/traces"
    assert trace_exporter_of(base) == "otlp"
    specific = Settings(
        otel_exporter_otlp_endpoint="http://collector.invalid:4318",
        otel_exporter_otlp_traces_endpoint="http://traces.invalid:9/custom",
    )
    assert otlp_traces_url(specific) == "http://traces.invalid:9/custom"
    # The project's own variable is an alias of the base URL, and wins over every OTEL_* one.
    own = specific.model_copy(update={"otlp_endpoint": "http://own.invalid:4318"})
    assert otlp_traces_url(own) == "http://own.invalid:4318/v1/traces"
    # Its earlier form, the full /v1/traces URL, is kept as it is.
    full = Settings(otlp_endpoint="http://own.invalid:4318/v1/traces")
    assert otlp_traces_url(full) == "http://own.invalid:4318/v1/traces"
    assert otlp_traces_url(Settings()) == "http://localhost:4318/v1/traces"
    assert trace_exporter_of(Settings()) == "none"
    assert trace_exporter_of(Settings(otel_traces_exporter="console")) == "console"
    assert trace_exporter_of(base.model_copy(update={"trace_exporter": "none"})) == "none"


def test_otel_variables_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env.invalid:4318")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "referrals-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=ops%20eu")
    settings = Settings()
    assert otlp_traces_url(settings) == "http://env.invalid:4318/v1/traces"
    assert resource_attributes(settings, "router") == {
        "deployment.environment": "test",
        "team": "ops eu",
        "service.name": "referrals-eu",
        "referral.component": "router",
    }


def test_service_name_falls_back_to_the_resource_attributes_then_the_component() -> None:
    named = Settings(otel_resource_attributes="service.name=from-attrs")
    assert resource_attributes(named, "router")["service.name"] == "from-attrs"
    assert resource_attributes(Settings(), "router")["service.name"] == "router"


def test_bad_otel_values_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="OTEL_RESOURCE_ATTRIBUTES must be key=value"):
        resource_attributes(Settings(otel_resource_attributes="novalue"), "router")
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER='zipkin' is not supported"):
        trace_exporter_of(Settings(otel_traces_exporter="zipkin"))
