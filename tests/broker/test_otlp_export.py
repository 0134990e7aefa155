"""Spans to a real OTLP/HTTP receiver, configured only by ``OTEL_EXPORTER_OTLP_ENDPOINT``.

``referral publish`` (the root), the router, the sink's delivery and its RECEIVED,
and ``referral status`` all export to the base URL with ``/v1/traces`` appended.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from typer.testing import CliRunner

from broker.config import Settings
from broker.network import Network
from broker.tracing import setup_tracing
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry
from cli.main import app
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import referral_json, wait_for
from tests.support.kafka import start_router
from tests.support.otlp_receiver import ReceivedSpan, otlp_receiver

pytestmark = pytest.mark.slow

#: Variables that would choose the exporter or endpoint otherwise: the test gives none of them.
_OTHER_VARIABLES = (
    "REFERRAL_TRACE_EXPORTER",
    "REFERRAL_OTLP_ENDPOINT",
    "REFERRAL_TRACE_FILE",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


def test_publish_route_deliver_received_reach_an_otlp_receiver_as_one_trace(
    provisioned: Settings, network: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = provisioned.topic_names()
    for name in _OTHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with otlp_receiver() as receiver, ExitStack() as stack:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        own = Settings(
            bootstrap_servers=provisioned.bootstrap_servers,
            state_dir=provisioned.state_dir,
            network_file=provisioned.network_file,
            topic_prefix=provisioned.topic_prefix,
        )
        codec = Codec(EmbeddedRegistry())
        router_tracing = setup_tracing(own, "router")
        stack.callback(router_tracing.shutdown)
        router = start_router(own, network, codec, tracing=router_tracing)
        stack.callback(router.stop)
        # The origin's connectors (its keys, its status driver) and the DE police's sink.
        for org in ("hl-nl", "police-de"):
            runtime = ConnectorRuntime(own, network, org, codec)
            stack.callback(runtime.stop)
            assert runtime.start().tracing.enabled

        data = referral_json("hl-nl", "DE")
        # Victims in DE: the hotline refers the case to the DE police.
        data["body"]["items"][0]["hosting"] = None
        data["envelope"]["jurisdictions"] = [
            {"country": "DE", "basis": "VICTIM_LOCATION", "derived": False}
        ]
        rid = data["envelope"]["referral_id"]
        path = tmp_path / "one.json"
        path.write_text(json.dumps(data))
        env = {
            "REFERRAL_BOOTSTRAP_SERVERS": str(own.bootstrap_servers),
            "REFERRAL_TOPIC_PREFIX": own.topic_prefix,
            "REFERRAL_NETWORK_FILE": str(own.network_file),
            "REFERRAL_STATE_DIR": str(own.state_dir),
        }
        res = CliRunner().invoke(app, ["publish", str(path), "--as", "hl-nl"], env=env)
        assert res.exit_code == 0, res.output
        # The CLI exported its span before exiting: the root is there at once.
        roots = [s for s in receiver.snapshot() if s.span.name == f"send {names.intake}"]
        assert len(roots) == 1
        (root,) = roots
        assert root.parent_id == ""
        assert root.span.kind == Span.SPAN_KIND_PRODUCER
        assert root.service == "publish-hl-nl"
        assert root.attribute("referral.id") == rid

        def in_trace() -> list[ReceivedSpan]:
            return [s for s in receiver.snapshot() if s.trace_id == root.trace_id]

        back = f"send {names.status('hl-nl')}"
        expected = {
            f"process {names.intake}",
            f"send {names.jurisdiction('DE')}",
            f"process {names.jurisdiction('DE')}",
            f"send {names.status_intake}",
            f"process {names.status_intake}",
            back,
            f"process {names.status('hl-nl')}",
        }
        # Each process exports in its own batches: wait until every hop's span is in.
        wait_for(
            lambda: expected <= {s.span.name for s in in_trace()},
            60,
            "every hop's span, publish to the origin's status driver",
        )
        spans = in_trace()
        by_id = {s.span_id: s for s in spans}

        def one(name: str) -> ReceivedSpan:
            found = [s for s in spans if s.span.name == name]
            assert len(found) == 1, f"{len(found)} spans named {name}"
            return found[0]

        def parent(span: ReceivedSpan) -> ReceivedSpan:
            return by_id[span.parent_id]

        route = one(f"process {names.intake}")
        assert (route.service, parent(route)) == ("router", root)
        forward = one(f"send {names.jurisdiction('DE')}")
        assert parent(forward) is route
        deliver = one(f"process {names.jurisdiction('DE')}")
        assert (deliver.service, parent(deliver)) == ("connectors-police-de", forward)
        received = one(f"send {names.status_intake}")
        assert received.attribute("referral.status") == "RECEIVED"
        assert parent(received) is deliver
        status_route = one(f"process {names.status_intake}")
        assert parent(status_route) is received
        to_origin = one(back)
        assert parent(to_origin) is status_route
        at_origin = one(f"process {names.status('hl-nl')}")
        assert (at_origin.service, parent(at_origin)) == ("connectors-hl-nl", to_origin)
        # Every span went to the base URL with the signal path appended, and nowhere else.
        assert set(receiver.paths) == {"/v1/traces"}

        # ``referral status`` exports its PRODUCER span: the root of the status's trace.
        res = CliRunner().invoke(app, ["status", "police-de", rid, "ACCEPTED"], env=env)
        assert res.exit_code == 0, res.output
        (status_root,) = [
            s
            for s in receiver.snapshot()
            if s.service == "status-police-de" and s.span.name == f"send {names.status_intake}"
        ]
        assert status_root.parent_id == ""
        assert status_root.span.kind == Span.SPAN_KIND_PRODUCER
        assert status_root.attribute("referral.status") == "ACCEPTED"
        wait_for(
            lambda: any(
                s.parent_id == status_root.span_id and s.service == "router"
                for s in receiver.snapshot()
            ),
            60,
            "the router's span under the status's root",
        )
