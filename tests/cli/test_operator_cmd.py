"""The operator's commands on the real broker: ledger, trace, flows, topics, tail."""

from __future__ import annotations

import copy
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.kafka import clients
from broker.ledger.events import LedgerEmitter, decode_events, handover_event
from broker.network import Network
from broker.routing.router import STATUS_UPDATE
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry
from cli.main import app
from tests.conftest import EXAMPLE_NETWORK
from tests.support.factories import make_referral, make_status_update
from tests.support.kafka import cli_env, publish, read_topic, start_router

REFERRAL = "org.referralbroker.v1.Referral"
#: The urgent deadline of the test network: 1.8 s, so an urgent referral is soon overdue.
URGENT_HOURS = 0.0005

runner = CliRunner()


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(EmbeddedRegistry())


def referral(country: str, priority: str = "NORMAL") -> dict[str, Any]:
    datum = copy.deepcopy(make_referral().to_avro())
    env = datum["envelope"]
    env["referral_id"] = str(uuid.uuid4())
    env["origin_org"] = "hl-nl"
    # A victim located in a country: the hotline refers it to that country's police.
    env["jurisdictions"] = [{"country": country, "basis": "VICTIM_LOCATION", "derived": False}]
    env["priority"] = priority
    return datum


def rid(datum: dict[str, Any]) -> str:
    return str(datum["envelope"]["referral_id"])


def env_for(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """CLI environment on this test's namespace, with a network whose urgent deadline is tiny."""
    text = EXAMPLE_NETWORK.read_text(encoding="utf-8")
    text = text.replace("urgent_receipt_hours = 8", f"urgent_receipt_hours = {URGENT_HOURS}")
    assert f"urgent_receipt_hours = {URGENT_HOURS}" in text
    network_file = tmp_path / "network.toml"
    network_file.write_text(text, encoding="utf-8")
    env = cli_env(settings)
    env["REFERRAL_NETWORK_FILE"] = str(network_file)
    env["COLUMNS"] = "250"
    return env


def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Exit code and what the command printed: stdout, or everything on failure.

    Log lines (kafka-python's warnings under load) go to stderr and stay out of the JSON.
    """
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def emit(settings: Settings, codec: Codec, events: list[dict[str, Any]]) -> None:
    producer = clients.producer(settings, role="test-ledger")
    try:
        ledger = LedgerEmitter(producer, codec, settings.topic_names().ledger)
        futures = [ledger.emit(e) for e in events]
        producer.flush()
        for f in futures:
            assert f is not None
            f.get(timeout=10)
    finally:
        producer.close()


def wait_for_events(settings: Settings, codec: Codec, want: int, timeout: float = 30) -> None:
    """Block until the ledger topic holds ``want`` handover events (bounded)."""
    deadline = time.monotonic() + timeout
    have = 0
    while time.monotonic() < deadline:
        records = read_topic(settings, settings.topic_names().ledger, idle=0.3, timeout=5)
        have = sum(len(decode_events(codec, r.value)) for r in records)
        if have >= want:
            return
        time.sleep(0.3)
    raise AssertionError(f"ledger holds {have} events, expected {want}")


def test_trace_flows_ledger_topics_and_tail_after_routing(
    provisioned: Settings, network: Network, codec: Codec, tmp_path: Path
) -> None:
    names = provisioned.topic_names()
    env = env_for(provisioned, tmp_path)
    normal, urgent, unserved = referral("DE"), referral("DE", "URGENT"), referral("US")
    all_three = (normal, urgent, unserved)
    # The origin's publisher would record PUBLISHED; no publisher runs here, so we do.
    emit(
        provisioned,
        codec,
        [
            handover_event(
                "PUBLISHED",
                referral_id=rid(d),
                case_id=d["envelope"]["case_id"],
                actor="hl-nl",
                from_party="hl-nl",
                topic=names.intake,
            )
            for d in all_three
        ],
    )
    publish(
        provisioned,
        names.intake,
        [(rid(d).encode(), codec.encode(REFERRAL, d)) for d in all_three] + [(b"junk", b"junk")],
    )
    router = start_router(provisioned, network, codec)
    try:
        routed = read_topic(provisioned, names.jurisdiction("DE"), at_least=1, idle=0.3)
        assert [r.key.decode() for r in routed] == [rid(normal)]
        # The DE sink would deliver and answer RECEIVED; no sink runs here, so we do.
        first = routed[0]
        emit(
            provisioned,
            codec,
            [
                handover_event(
                    "DELIVERED",
                    referral_id=rid(normal),
                    case_id=normal["envelope"]["case_id"],
                    actor="police-de",
                    from_party="hl-nl",
                    to_party="police-de",
                    topic=first.topic,
                    partition=first.partition,
                    offset=first.offset,
                    reason="sqlite",
                )
            ],
        )
        receipt = make_status_update(
            referral_id=rid(normal),
            case_id=normal["envelope"]["case_id"],
            emitted_by="police-de",
            origin_org="hl-nl",
        )
        publish(
            provisioned,
            names.status_intake,
            [(rid(normal).encode(), codec.encode(STATUS_UPDATE, receipt.to_avro()))],
        )
        # 3 PUBLISHED + 3 ROUTED + 1 DEAD_LETTERED + 1 DELIVERED + 1 STATUS_ROUTED
        wait_for_events(provisioned, codec, 9)
        # The origin's status driver would verify the RECEIVED and record that it acted
        # on it; none runs here, so we do (the trace counts only that, not the router's).
        emit(
            provisioned,
            codec,
            [
                handover_event(
                    "DELIVERED",
                    referral_id=rid(normal),
                    case_id=normal["envelope"]["case_id"],
                    actor="hl-nl",
                    from_party="police-de",
                    to_party="hl-nl",
                    topic=names.status("hl-nl"),
                    reason="RECEIVED",
                )
            ],
        )
    finally:
        router.stop()
    time.sleep(URGENT_HOURS * 3600)  # the urgent referral is now past its deadline

    # -- ledger ---------------------------------------------------------------------------
    code, out = cli(env, "ledger", "sync")
    assert code == 0, out
    assert "10 entries" in out
    code, out = cli(env, "ledger", "sync", "--json")
    assert code == 0, out
    assert (json.loads(out)["added"], json.loads(out)["entries"]) == (0, 10)
    code, out = cli(env, "ledger", "verify")
    assert (code, out.strip()) == (0, "ledger intact: 10 entries")
    code, out = cli(env, "ledger", "show", "--referral", rid(normal), "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert [e["event"] for e in shown] == [
        "PUBLISHED", "ROUTED", "DELIVERED", "STATUS_ROUTED", "DELIVERED",
    ]  # fmt: skip
    assert all(e["referral_id"] == rid(normal) for e in shown)

    # -- trace ----------------------------------------------------------------------------
    code, out = cli(env, "trace", rid(normal), "--json")
    assert code == 0, out
    t = json.loads(out)
    assert [h["event"] for h in t["hops"]] == [
        "PUBLISHED", "ROUTED", "DELIVERED", "STATUS_ROUTED", "DELIVERED",
    ]  # fmt: skip
    assert t["hops"][1]["jurisdiction"] == "DE"
    assert t["hops"][1]["since_previous_s"] >= 0
    assert t["route_reasons"] == {names.jurisdiction("DE"): "DE:VICTIM_LOCATION"}
    assert (t["status"], t["status_by"], t["origin"]) == ("RECEIVED", "police-de", "hl-nl")
    assert t["awaited"] == []

    code, out = cli(env, "trace", rid(urgent), "--json")
    assert code == 0, out
    awaited = json.loads(out)["awaited"]
    assert [(a["org"], a["topic"], a["urgent"], a["overdue"]) for a in awaited] == [
        ("police-de", names.urgent("DE"), True, True)
    ]
    code, out = cli(env, "trace", rid(urgent))
    assert code == 0, out
    assert "OVERDUE: RECEIVED from police-de" in out
    assert "status: none yet" in out
    assert "example.org" not in out

    missing = str(uuid.uuid4())
    code, out = cli(env, "trace", missing, "--no-sync")
    assert code == 2  # an unknown id, as every unknown name (issue 29)
    [line] = out.strip().splitlines()
    assert line.startswith(f"error: unknown referral '{missing}' in the local ledger; ")
    assert line.endswith(" known, none close")

    # -- flows ----------------------------------------------------------------------------
    code, out = cli(env, "flows", "--json", "--since", "1h")
    assert code == 0, out
    f = json.loads(out)
    assert f["matrix"] == {"hl-nl": {"DE": 2, "unassigned": 1}}
    assert f["totals"] == {
        "published": 4, "delivered": 1, "dead_lettered": 1, "unassigned": 1, "pending": 1,
    }  # fmt: skip
    assert [(o["referral_id"], o["urgent"]) for o in f["overdue"]] == [(rid(urgent), True)]
    assert f["dead_letters"] == {"ROUTE_DECODE: NotFramed": 1}
    de = next(r for r in f["routes"] if r["destination"] == "DE")
    assert de["published_to_delivered"]["n"] == 1
    assert de["delivered_to_received"]["n"] == 1
    code, out = cli(env, "flows", "--no-sync")
    assert code == 0, out
    assert "totals: published 4 = delivered 1 + dead-lettered 1 + unassigned 1" in out
    code, out = cli(env, "flows", "--since", "yesterday")
    assert code == 2  # a usage problem (ConfigError)
    assert out.strip().startswith("error: --since: expected a duration")

    # -- topics: counts by reading, lag of the router group ---------------------------------
    code, out = cli(env, "topics", "list", "--json", "--counts")
    assert code == 0, out
    listed = json.loads(out)
    assert listed["broker"] == provisioned.bootstrap_servers
    topics = listed["topics"]
    assert set(topics) == set(network.required_topics(names))
    assert topics[names.intake]["messages"] == 4
    assert topics[names.intake]["source"] == "read"
    assert topics[names.jurisdiction("DE")]["messages"] == 1
    assert topics[names.urgent("DE")]["messages"] == 1
    assert topics[names.deadletter]["messages"] == 1
    assert topics[names.intake]["group_lag"] == {names.prefix + "router": 0}
    assert topics[names.status_intake]["group_lag"] == {names.prefix + "router": 0}
    code, out = cli(env, "topics", "list")
    assert code == 0, out
    assert names.intake in out
    assert "counts from" in out

    # -- tail -----------------------------------------------------------------------------
    code, out = cli(env, "tail", "referrals.intake", "--decode", "--from-beginning", "--json",
                    "--max", "4")  # fmt: skip
    assert code == 0, out
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert len(lines) == 4
    decoded = [line["value"] for line in lines]
    assert sorted(v["referral_id"] for v in decoded if v.get("record") == "Referral") == sorted(
        rid(d) for d in all_three
    )
    assert [v for v in decoded if "undecodable" in v] == [{"undecodable": "NotFramed", "size": 4}]
    assert "example.org" not in out  # no body without --body
    code, out = cli(env, "tail", names.intake, "--decode", "--body", "--from-beginning",
                    "--max", "4")  # fmt: skip
    assert code == 0, out
    assert "example.org" in out
    assert "undecodable (4 bytes): NotFramed" in out
    code, out = cli(env, "tail", "handover.ledger", "--decode", "--from-beginning",
                    "--idle-exit", "1")  # fmt: skip
    assert code == 0, out
    assert f"STATUS_ROUTED {rid(normal)} by router" in out

    # -- tampering shows through the CLI ----------------------------------------------------
    db = sqlite3.connect(Path(env["REFERRAL_STATE_DIR"]) / "ledger.sqlite3")
    db.execute("UPDATE entries SET actor = 'police-fr' WHERE idx = 4")
    db.commit()
    db.close()
    code, out = cli(env, "ledger", "verify")
    assert (code, out.strip()) == (
        1,
        "ledger broken at entry 4: altered (not what its signed record says)",
    )


def test_tail_follows_new_records_and_survives_garbage(
    provisioned: Settings, codec: Codec, tmp_path: Path
) -> None:
    names = provisioned.topic_names()
    env = env_for(provisioned, tmp_path)
    old = referral("FR")
    publish(provisioned, names.jurisdiction("FR"), [(b"k", codec.encode(REFERRAL, old))])
    # Following (no --from-beginning) shows nothing that was there before.
    code, out = cli(env, "tail", "referrals.to.FR", "--decode", "--idle-exit", "1")
    assert (code, out) == (0, "")
    code, out = cli(env, "tail", "no.such.topic", "--max", "1")
    assert code == 2
    assert out.strip().startswith(
        f"error: unknown topic '{names.prefix}no.such.topic' on {provisioned.bootstrap_servers}; "
    )
    assert len(out.strip().splitlines()) == 1
    publish(provisioned, names.jurisdiction("FR"), [(None, b"\x00\x00\x00\x00\x63garbage")])
    code, out = cli(env, "tail", "referrals.to.FR", "--decode", "--from-beginning", "--max", "2")
    assert code == 0, out
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert f"referral_id={rid(old)}" in lines[0]
    assert "undecodable (12 bytes): UnknownSchemaId" in lines[1]
