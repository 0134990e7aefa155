"""Tracing: W3C context through Kafka headers, messaging span conventions, no payload."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from broker.config import Settings
from broker.network import Network
from broker.tracing import Tracing, extract, inject, safe_attributes, setup_tracing
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


def test_jsonl_exporter_writes_one_span_per_line(tmp_path: Path) -> None:
    settings = Settings(trace_exporter="jsonl", trace_file=tmp_path / "spans.jsonl")
    tracing = setup_tracing(settings, "unit")
    with tracing.send("topic-b", []):
        pass
    tracing.shutdown()
    lines = (tmp_path / "spans.jsonl").read_text().splitlines()
    assert len(lines) == 1
    span = json.loads(lines[0])
    assert span["name"] == "send topic-b"
    assert span["kind"] == "PRODUCER"
    assert span["service"] == "unit"
    assert span["attributes"]["messaging.system"] == "kafka"


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
