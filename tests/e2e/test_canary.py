"""A canary referral crosses the network; none of its content leaks into telemetry.

Its URLs, hashes and summary must not appear in any exported span, any log line
(DEBUG and up, every logger, kafka-python included), any error message or any
dead-letter header — only ids, organisations, jurisdictions and topics may.
"""

from __future__ import annotations

import json
import logging
import secrets
from contextlib import ExitStack
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.kafka.deadletter import HEADER_DLQ_PREFIX
from broker.network import Network
from broker.tracing import setup_tracing
from broker.wire.codec import Codec
from broker.wire.models import Referral
from broker.wire.registry import REFERRAL, EmbeddedRegistry
from cli.main import app
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import referral_json, wait_for
from tests.support.kafka import publish, read_topic, start_router

pytestmark = pytest.mark.slow


def canary(org: str, country: str) -> tuple[dict[str, object], list[str]]:
    """A referral whose every sensitive field holds a unique marker; and the markers."""
    tag = secrets.token_hex(6)
    data = referral_json(org, country)
    item = data["body"]["items"][0]  # type: ignore[index]
    host = f"canary-{tag}.example.org"
    item["url"] = f"https://{host}/canary-path-{tag}"
    sha = secrets.token_hex(32)
    item["hashes"] = [{"algorithm": "SHA256", "value": sha}]
    item["hosting"]["provider"] = f"Canary Provider {tag}"
    data["body"]["summary"] = f"canary narrative {tag} with neutral words"  # type: ignore[index]
    return data, [f"canary-{tag}", f"canary-path-{tag}", sha, f"Canary Provider {tag}", tag]


def test_canary_content_never_leaks(
    provisioned: Settings, network: Network, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    spans_file = tmp_path / "spans.jsonl"
    settings = Settings(
        **{
            **provisioned.model_dump(),
            "trace_exporter": "jsonl",
            "trace_file": spans_file,
        }
    )
    codec = Codec(EmbeddedRegistry())
    names = settings.topic_names()
    good, markers = canary("hl-nl", "NL")  # hosted at the hotline's home: to police-nl
    bad_url, bad_markers = canary("hl-nl", "FR")
    bad_url["body"]["items"][0]["url"] = "https:// canary bad url " + bad_markers[-1]  # type: ignore[index]
    # A canary whose jurisdiction is unknown, written by a client that skips validation.
    legacy, legacy_markers = canary("hl-nl", "DE")
    datum = Referral.model_validate(
        {**legacy, "envelope": {**legacy["envelope"], "origin_country": "NL"}}  # type: ignore[dict-item]
    ).to_avro()
    datum["envelope"]["jurisdictions"] = [
        {"country": "canary-" + legacy_markers[-1], "basis": "HOSTING", "derived": False}
    ]
    everything = markers + bad_markers + legacy_markers
    errors: list[str] = []
    with ExitStack() as stack:
        tracing = setup_tracing(settings, "router")
        stack.callback(tracing.shutdown)
        router = start_router(settings, network, codec, tracing=tracing)
        stack.callback(router.stop)
        runtimes = {}
        for org in ("hl-nl", "police-nl", "police-fr"):
            rt = ConnectorRuntime(settings, network, org, codec)
            stack.callback(rt.stop)
            runtimes[org] = rt.start()
        result = runtimes["hl-nl"].publisher.publish([("good", good), ("bad", bad_url)])
        errors += [p for r in result.rejected for p in r.problems]
        assert len(result.published) == 1
        assert len(result.rejected) == 1
        publish(
            settings,
            names.intake,
            [(datum["envelope"]["referral_id"].encode(), codec.encode(REFERRAL, datum))],
        )
        rid = good["envelope"]["referral_id"]  # type: ignore[index]
        status = Path(settings.state_dir) / "orgs" / "hl-nl" / "status" / f"{rid}.jsonl"
        wait_for(status.exists, 60, "the canary's RECEIVED at the origin")
        dead = read_topic(settings, names.deadletter, at_least=1)
    # The CLI's operator views of the same run.
    runner = CliRunner()
    env = {
        "REFERRAL_BOOTSTRAP_SERVERS": str(settings.bootstrap_servers),
        "REFERRAL_TOPIC_PREFIX": settings.topic_prefix,
        "REFERRAL_STATE_DIR": str(settings.state_dir),
        "REFERRAL_NETWORK_FILE": str(settings.network_file),
    }
    results = [
        runner.invoke(app, ["trace", str(rid), "--json"], env=env),
        runner.invoke(app, ["flows", "--since", "all"], env=env),
        runner.invoke(app, ["dlq", "list", "--json"], env=env),
    ]
    outputs = [r.output for r in results]  # stdout and stderr: both are searched for leaks
    assert "DELIVERED" in {h["event"] for h in json.loads(results[0].stdout)["hops"]}
    # Telemetry collected: spans, log records, rejection messages, dead-letter headers.
    spans = spans_file.read_text()
    assert f'"key":"referral.id","value":{{"stringValue":"{rid}"}}' in spans
    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert caplog.records, "no log lines were captured"
    headers = [
        f"{k}={v.decode('utf-8', 'replace')}"
        for r in dead
        for k, v in r.headers
        if k.startswith(HEADER_DLQ_PREFIX)
    ]
    assert any("RoutingError" in h for h in headers)
    assert errors
    haystacks = {
        "spans": spans,
        "logs": logs,
        "errors": "\n".join(errors),
        "dead-letter headers": "\n".join(headers),
        "cli output": "\n".join(outputs),
    }
    for where, text in haystacks.items():
        for marker in everything:
            assert marker not in text, f"canary content leaked into {where}"
    assert json.loads(results[2].stdout)[0]["stage"] == "ROUTE_DECIDE"
