"""One referral is one trace: source → router → two sinks → status back to the origin."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from broker.config import Settings
from broker.network import Network
from broker.tracing import Tracing
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import referral_json, wait_for
from tests.support.kafka import start_router

pytestmark = pytest.mark.slow


def tracing_for(service: str, exporter: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider, service)


def received_by(settings: Settings, origin: str, rid: str) -> set[str]:
    path = Path(settings.state_dir) / "orgs" / origin / "status" / f"{rid}.jsonl"
    if not path.exists():
        return set()
    return {
        json.loads(line)["emitted_by"]
        for line in path.read_text().splitlines()
        if json.loads(line)["status"] == "RECEIVED"
    }


def test_one_multi_jurisdiction_referral_is_one_trace(
    provisioned: Settings, network: Network
) -> None:
    exporter = InMemorySpanExporter()
    codec = Codec(EmbeddedRegistry())
    names = provisioned.topic_names()
    data = referral_json("hl-nl", "DE")
    # Victims located in DE and FR: the hotline refers the case to both countries' police.
    data["body"]["items"][0]["hosting"] = None
    data["envelope"]["jurisdictions"] = [
        {"country": "DE", "basis": "VICTIM_LOCATION", "derived": False},
        {"country": "FR", "basis": "VICTIM_LOCATION", "derived": False},
    ]
    rid = data["envelope"]["referral_id"]
    with ExitStack() as stack:
        router = start_router(provisioned, network, codec, tracing=tracing_for("router", exporter))
        stack.callback(router.stop)
        runtimes = {}
        for org in ("hl-nl", "police-de", "police-fr"):
            rt = ConnectorRuntime(
                provisioned, network, org, codec, tracing=tracing_for(org, exporter)
            )
            stack.callback(rt.stop)
            runtimes[org] = rt.start()
        result = runtimes["hl-nl"].publisher.publish([("one", data)])
        assert [p.referral_id for p in result.published] == [rid]
        wait_for(
            lambda: received_by(provisioned, "hl-nl", rid) == {"police-de", "police-fr"},
            60,
            "RECEIVED from both police sinks",
        )
        # The origin's status driver has processed both receipts: wait for its spans too.
        wait_for(
            lambda: (
                sum(
                    s.name == f"process {names.status('hl-nl')}"
                    for s in exporter.get_finished_spans()
                )
                >= 2
            ),
            20,
            "the origin's status spans",
        )

    spans = [s for s in exporter.get_finished_spans() if _rid(s) in (rid, None)]
    mine = [s for s in spans if s.context.trace_id == _root(spans, names.intake).context.trace_id]
    by_id = {s.context.span_id: s for s in mine}

    def named(name: str) -> list[ReadableSpan]:
        return [s for s in mine if s.name == name]

    def parent_of(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, f"{span.name} has no parent"
        return by_id[span.parent.span_id]

    root = _root(spans, names.intake)
    assert root.kind == SpanKind.PRODUCER
    assert root.parent is None
    assert root.resource.attributes["service.name"] == "hl-nl"
    # Router: process intake (child of the source's send), two sends (children of it).
    (route,) = named(f"process {names.intake}")
    assert route.kind == SpanKind.CONSUMER
    assert parent_of(route) is root
    to_de = by_name(mine, f"send {names.jurisdiction('DE')}")
    to_fr = by_name(mine, f"send {names.jurisdiction('FR')}")
    for send in (to_de, to_fr):
        assert send.kind == SpanKind.PRODUCER
        assert parent_of(send) is route
    # Each sink processes its copy as a child of the router's send to its topic.
    sink_de = by_name(mine, f"process {names.jurisdiction('DE')}")
    sink_fr = by_name(mine, f"process {names.jurisdiction('FR')}")
    assert sink_de.kind == SpanKind.CONSUMER
    assert parent_of(sink_de) is to_de
    assert parent_of(sink_fr) is to_fr
    assert sink_de.resource.attributes["service.name"] == "police-de"
    # Each sink's RECEIVED goes out under its process span ...
    receipts = named(f"send {names.status_intake}")
    assert {parent_of(r).context.span_id for r in receipts} == {
        sink_de.context.span_id,
        sink_fr.context.span_id,
    }
    # ... the router forwards each to the origin's status topic ...
    status_routes = named(f"process {names.status_intake}")
    assert {parent_of(p).context.span_id for p in status_routes} == {
        r.context.span_id for r in receipts
    }
    back = named(f"send {names.status('hl-nl')}")
    assert {parent_of(b).context.span_id for b in back} == {
        p.context.span_id for p in status_routes
    }
    # ... and the origin's status driver processes them: the trace closes at the origin.
    at_origin = named(f"process {names.status('hl-nl')}")
    assert len(at_origin) == 2
    assert {parent_of(o).context.span_id for o in at_origin} == {b.context.span_id for b in back}
    assert {o.resource.attributes["service.name"] for o in at_origin} == {"hl-nl"}
    # The router's ledger batch links the records it processed.
    ledger_links = {
        link.context.span_id
        for s in exporter.get_finished_spans()
        if s.name == f"send {names.ledger}"
        for link in s.links
    }
    assert route.context.span_id in ledger_links


def by_name(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name}"
    return found[0]


def _rid(span: ReadableSpan) -> str | None:
    value = (span.attributes or {}).get("referral.id")
    return str(value) if value is not None else None


def _root(spans: list[ReadableSpan], intake: str) -> ReadableSpan:
    roots = [s for s in spans if s.name == f"send {intake}" and s.parent is None]
    assert len(roots) == 1, f"{len(roots)} root spans"
    return roots[0]
