"""Each connector kind against the real embedded broker; records are addressed by hand."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from broker.config import Settings
from broker.kafka.deadletter import H_STAGE
from broker.ledger.events import decode_events
from broker.network import Network
from broker.origin.outbox import Outbox
from broker.origin.publisher import Publisher
from broker.origin.status_feed import StatusFeed
from broker.origin.status_log import StatusLog
from broker.receiver.inbox import Inbox
from broker.receiver.sink_driver import SinkDriver
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL, STATUS_UPDATE
from broker.wire.topics import Headers
from cli.main import app
from connectors.drop_folder import DropFolderConfig, DropFolderSource
from connectors.http_intake import HttpIntakeConfig, HttpIntakeSource
from connectors.inbox_folder import InboxFolderConfig, InboxFolderSink
from connectors.sqlite_sink import SqliteCaseConfig, SqliteCaseSink
from connectors.status_sink import StatusFolderConfig, StatusFolderSink
from connectors.webhook import WebhookConfig, WebhookSink
from tests.support.connectors import (
    ENV,
    TOKEN,
    cli_env_for,
    hook_server,
    referral_json,
    wait_for,
)
from tests.support.factories import make_status_update
from tests.support.kafka import header, read_topic

MARKER = "secret-marker-host"


def _publisher(
    settings: Settings, net: Network, org: str, codec: Codec, producer: Any
) -> Publisher:
    return Publisher(settings, net, org, codec, producer, Outbox.for_org(settings, org))


def _events(settings: Settings, codec: Codec, kind: str, at_least: int = 0) -> list[dict[str, Any]]:
    out = []
    for rec in read_topic(settings, settings.topic_names().ledger, at_least=at_least, idle=0.5):
        out.extend(e for e in decode_events(codec, rec.value) if e["event"] == kind)
    return out


# -- sources --------------------------------------------------------------------------------------


def test_drop_folder_publishes_valid_rows_and_rejects_malformed_file(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> None:
    publisher = _publisher(ready, net, "hl-a", codec, producer)
    source = DropFolderSource(DropFolderConfig(path="drop", settle_seconds=0), ready, publisher)
    source.open()
    good = [referral_json("hl-a", "NL"), referral_json("hl-a", "DE")]
    bad = referral_json("hl-a", "NL")
    bad["body"]["items"][0]["url"] = f"ftp://{MARKER}.example.org/x"
    lines = [json.dumps(good[0]), json.dumps(bad), "{not json", json.dumps(good[1])]
    (source.path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    csv_text = (
        "case_id,url,hashes,hosting_country,priority\n"
        "case-c1,https://a.example.org/1,SHA256:" + "ab" * 32 + ",FR,HIGH\n"
        "case-c2,https://b.example.org/2,,NL,\n"
    )
    (source.path / "export.csv").write_text(csv_text)
    (source.path / "notes.txt").write_text("left alone")

    assert source.poll() == 4

    assert (source.path / "done" / "export.csv").read_text() == csv_text
    assert (source.path / "notes.txt").exists()
    rejected = source.path / "rejected" / "mixed.jsonl"
    assert rejected.read_text().splitlines() == lines, "the input file is kept intact"
    report = (source.path / "rejected" / "mixed.jsonl.errors.txt").read_text()
    assert "mixed.jsonl: 2 of 4 input(s) rejected, 2 published" in report
    assert "  line 2: body.items.0.url: URL scheme must be http or https" in report
    assert "  line 3: (line): not valid JSON" in report
    good_ids = [g["envelope"]["referral_id"] for g in good]
    assert f"  line 1: referral {good_ids[0]}" in report
    assert f"  line 4: referral {good_ids[1]}" in report
    assert MARKER not in report
    assert not list(source.path.glob("*.json*")), "nothing left in the drop folder"

    records = read_topic(ready, ready.topic_names().intake, at_least=4)
    assert len(records) == 4
    ids = {r.key.decode() for r in records}
    assert set(good_ids) <= ids
    for rec in records:
        assert header(rec, Headers.REFERRAL_ID) == rec.key.decode()
        assert header(rec, Headers.ORIGIN) == "hl-a"
        _, datum = codec.decode(rec.value, expected=REFERRAL)
        assert datum["envelope"]["origin_org"] == "hl-a"
    outbox = publisher.outbox
    assert {p.referral_id for p in outbox.pending()} == ids
    waiting = {p.case_id: p.waiting_for for p in outbox.pending()}
    assert waiting["case-c1"] == ("police-fr",)
    assert len(_events(ready, codec, "PUBLISHED", at_least=4)) == 4


def test_drop_folder_reprocessing_a_file_does_not_create_new_referrals(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> None:
    publisher = _publisher(ready, net, "hl-a", codec, producer)
    source = DropFolderSource(DropFolderConfig(path="drop", settle_seconds=0), ready, publisher)
    source.open()
    data = referral_json("hl-a", "NL")
    del data["envelope"]["referral_id"]
    text = json.dumps(data)
    (source.path / "a.json").write_text(text)
    source.poll()
    (source.path / "a-again.json").write_text(text)  # the same export dropped again
    source.poll()
    [first, second] = source.reports
    assert first.result.published[0].referral_id == second.result.published[0].referral_id
    assert second.result.published[0].repeat
    assert publisher.outbox.count() == 1
    assert (source.path / "done" / "a-again.json").exists()


def test_http_intake_over_loopback(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> None:
    publisher = _publisher(ready, net, "hl-b", codec, producer)
    source = HttpIntakeSource(
        HttpIntakeConfig(token_env="TEST_TOKEN_HL_B", max_body_bytes=4096, max_batch=3),
        publisher,
        ENV,
    )
    source.open()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        assert source.port
        assert source.port > 0
        with httpx.Client(base_url=source.url, timeout=30) as client:
            assert client.get("/health").json() == {"status": "ok", "org": "hl-b"}
            one = referral_json("hl-b", "DE")
            r = client.post("/referrals", json=one)
            assert r.status_code == 401
            assert r.json()["title"] == "Unauthorized"
            r = client.post("/referrals", json=one, headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401
            as_json = {**auth, "Content-Type": "application/json"}
            r = client.post("/referrals", content=b"{oops", headers=as_json)
            assert r.status_code == 400
            assert r.headers["content-type"].startswith("application/problem+json")
            r = client.post("/referrals", content=b"{oops", headers=auth)
            assert r.status_code == 415, "a body that is not application/json"
            r = client.post("/referrals", content=b"[" + b" " * 5000 + b"]", headers=as_json)
            assert r.status_code == 413
            r = client.post("/referrals", json=[one] * 4, headers=auth)
            assert r.status_code == 413
            bad = referral_json("hl-b", "DE")
            bad["body"]["items"][0]["url"] = f"gopher://{MARKER}.example.org/"
            del bad["envelope"]["case_id"]
            r = client.post("/referrals", json=[one, bad], headers=auth)
            assert r.status_code == 422
            problems = r.json()["problems"]
            assert {(p["index"], p["field"]) for p in problems} == {
                (1, "envelope.case_id"),
                (1, "body.items.0.url"),
            }
            assert MARKER not in r.text
            two = referral_json("hl-b", "FR")
            r = client.post("/referrals", json=[one, two], headers=auth)
            assert r.status_code == 202
            accepted = r.json()["accepted"]
    finally:
        source.close()
    want = [one["envelope"]["referral_id"], two["envelope"]["referral_id"]]
    assert [a["referral_id"] for a in accepted] == want
    assert all(a["sent"] for a in accepted)
    records = read_topic(ready, ready.topic_names().intake, at_least=2)
    assert sorted(r.key.decode() for r in records) == sorted(want), "the 422 batch sent nothing"


# -- sinks ----------------------------------------------------------------------------------------


def _address(
    producer: KafkaProducer, topic: str, value: bytes, referral_id: str, orgs: str
) -> None:
    """What the router does: the original bytes, keyed by id, with the destination orgs."""
    producer.send(
        topic,
        key=referral_id.encode(),
        value=value,
        headers=[
            (Headers.REFERRAL_ID, referral_id.encode()),
            (Headers.DESTINATION_ORGS, orgs.encode()),
            (Headers.ROUTE_REASON, b"test"),
        ],
    )


def _drain(driver: SinkDriver | StatusFeed, done: Any, timeout: float = 30) -> None:
    def step() -> bool:
        driver.poll_once()
        return bool(done())

    wait_for(step, timeout, f"{driver.name} driver of {driver.org_id}", step=0)


@pytest.mark.parametrize("kind", ["inbox_folder", "sqlite", "webhook"])
def test_sink_delivers_once_despite_redelivery_and_offset_reset(
    kind: str, ready: Settings, net: Network, codec: Codec, producer: KafkaProducer, tmp_path: Path
) -> None:
    org = {"inbox_folder": "police-nl", "sqlite": "police-de", "webhook": "police-fr"}[kind]
    country = net.organisation(org).country
    names = ready.topic_names()
    data = referral_json("hl-a", country)
    rid = data["envelope"]["referral_id"]
    pub = _publisher(ready, net, "hl-a", codec, producer)
    value = pub.prepare(data).value
    other = referral_json("hl-a", country)
    other_value = pub.prepare(other).value
    topic = names.jurisdiction(country)
    _address(producer, topic, value, rid, org)
    _address(producer, topic, value, rid, org)  # redelivered / republished
    _address(producer, topic, other_value, other["envelope"]["referral_id"], "someone-else")
    for junk in (b"\x00\x00\x00\x00\x01garbage", b"not framed"):
        producer.send(
            topic, key=b"junk", value=junk, headers=[(Headers.DESTINATION_ORGS, org.encode())]
        )
    producer.flush(10)

    with hook_server() as hook:
        if kind == "inbox_folder":
            sink: Any = InboxFolderSink(InboxFolderConfig(path="inbox"), ready)
        elif kind == "sqlite":
            sink = SqliteCaseSink(SqliteCaseConfig(path="cases.sqlite3"), ready)
        else:
            sink = WebhookSink(
                WebhookConfig(url=hook.url, secret_env="TEST_WEBHOOK_SECRET"), ready, ENV
            )

        def delivered() -> int:
            if kind == "inbox_folder":
                return len(list((Path(ready.state_dir) / "inbox").glob("*.json")))
            if kind == "sqlite":
                with sqlite3.connect(Path(ready.state_dir) / "cases.sqlite3") as db:
                    return int(db.execute("SELECT COUNT(*) FROM cases").fetchone()[0])
            return len(hook.referral_ids())

        inbox = Inbox.for_org(ready, org)
        for group, dups in ((f"sink-{org}", 1), (f"sink-{org}-replay", 3)):
            driver = SinkDriver(
                ready, org, codec, [topic], [sink], inbox, producer=producer, group_id=group
            )
            driver.open()
            try:
                _drain(
                    driver,
                    lambda d=dups, drv=driver: (
                        inbox.duplicates >= d and drv.stats.dead_lettered >= 2
                    ),
                )
            finally:
                driver.close()
            assert delivered() == 1
        assert inbox.duplicates == 3
        assert inbox.delivered() == [rid]
        if kind == "webhook":
            [request] = hook.requests
            assert request["signed"]
            assert request["body"]["referral"]["envelope"]["referral_id"] == rid
        if kind == "sqlite":
            with sqlite3.connect(Path(ready.state_dir) / "cases.sqlite3") as db:
                row = db.execute("SELECT referral_id, origin_org, tlp FROM cases").fetchone()
            assert row == (rid, "hl-a", "AMBER")
        if kind == "inbox_folder":
            doc = json.loads((Path(ready.state_dir) / "inbox" / f"{rid}.json").read_text())
            assert doc["referral"]["envelope"]["referral_id"] == rid
            assert doc["delivery"]["topic"] == topic

    receipts = read_topic(ready, names.status_intake, at_least=4)
    statuses = [codec.decode(r.value, expected=STATUS_UPDATE)[1] for r in receipts]
    assert {(s["referral_id"], s["emitted_by"], s["status"]) for s in statuses} == {
        (rid, org, "RECEIVED")
    }
    assert len(statuses) == 4, "one RECEIVED per copy: the first may have been lost"
    dead = read_topic(ready, names.deadletter, at_least=4)
    assert [header(d, H_STAGE) for d in dead] == ["SINK_DECODE"] * 4
    assert len(_events(ready, codec, "DUPLICATE_SKIPPED", at_least=1)) == 3
    assert len(_events(ready, codec, "DELIVERED")) == 1


def test_webhook_that_finally_fails_is_dead_lettered_not_recorded(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> None:
    names = ready.topic_names()
    pub = _publisher(ready, net, "hl-a", codec, producer)
    five, four = referral_json("hl-a", "FR"), referral_json("hl-a", "FR")
    topic = names.jurisdiction("FR")
    originals = set()
    for data in (five, four):
        rid = data["envelope"]["referral_id"]
        value = pub.prepare(data).value
        originals.add(value)
        _address(producer, topic, value, rid, "police-fr")
    producer.flush(10)
    with hook_server() as hook:
        hook.script = [503, 503, 400]  # the first gives up after 2 attempts; the 400 is final
        sink = WebhookSink(
            WebhookConfig(
                url=hook.url, secret_env="TEST_WEBHOOK_SECRET", max_attempts=2, backoff_initial=0.01
            ),
            ready,
            ENV,
        )
        inbox = Inbox.for_org(ready, "police-fr")
        driver = SinkDriver(ready, "police-fr", codec, [topic], [sink], inbox, producer=producer)
        driver.open()
        try:
            _drain(driver, lambda: driver.stats.dead_lettered >= 2)
        finally:
            driver.close()
        assert len(hook.requests) == 3
    assert inbox.delivered() == []
    dead = read_topic(ready, names.deadletter, at_least=2)
    reasons = sorted(header(d, "__connect.errors.exception.message") or "" for d in dead)
    assert [header(d, H_STAGE) for d in dead] == ["DELIVER", "DELIVER"]
    assert reasons == [
        "webhook: gave up after 2 attempt(s): HTTP 503",
        "webhook: refused with HTTP 400 (not retried)",
    ]
    assert {d.value for d in dead} == originals, "dead letters keep the original bytes"
    statuses = [
        codec.decode(r.value, expected=STATUS_UPDATE)[1]
        for r in read_topic(ready, names.status_intake, idle=0.5)
    ]
    assert [(s["status"], s["reason_code"]) for s in statuses] == [("REJECTED", "HTTP_400")], (
        "no RECEIVED for a failure; the refusal for good is answered with REJECTED"
    )
    answered_400 = [r["id"] for r in hook.requests if r["status"] == 400]
    assert [r.referral_id for r in inbox.refusals()] == answered_400, "the one answered 400"
    assert inbox.open_failures() == 1, "the 503 stays open until a delivery resolves it"


# -- the origin side ------------------------------------------------------------------------------


def test_status_feed_clears_outbox_and_writes_each_status_once(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer
) -> None:
    names = ready.topic_names()
    pub = _publisher(ready, net, "hl-a", codec, producer)
    result = pub.publish(
        [("a", referral_json("hl-a", "NL")), ("b", referral_json("hl-a", "DE", priority="HIGH"))]
    )
    [a, b] = result.published
    assert pub.outbox.pending()[0].waiting_for == ("police-nl",)
    updates = [
        make_status_update(
            referral_id=a.referral_id, case_id=a.case_id, emitted_by="police-nl", origin_org="hl-a"
        ),
        make_status_update(
            referral_id=a.referral_id, case_id=a.case_id, emitted_by="police-nl", origin_org="hl-a"
        ),
        make_status_update(
            referral_id=a.referral_id,
            case_id=a.case_id,
            emitted_by="police-nl",
            origin_org="hl-a",
            status="ACCEPTED",
            note="synthetic note",
        ),
    ]
    for u in updates:
        producer.send(
            names.status("hl-a"),
            key=u.referral_id.encode(),
            value=codec.encode(STATUS_UPDATE, u.to_avro()),
        )
    producer.send(names.status("hl-a"), key=b"x", value=b"\x00garbage")
    producer.flush(10)
    folder = StatusFolderSink(StatusFolderConfig(path="status"), ready)
    driver = StatusFeed(
        ready,
        "hl-a",
        codec,
        [folder],
        pub.outbox,
        StatusLog.for_org(ready, "hl-a"),
        producer=producer,
    )
    driver.open()
    try:
        _drain(driver, lambda: driver.stats.records >= 4)
    finally:
        driver.close()
    assert [p.referral_id for p in pub.outbox.pending()] == [b.referral_id]
    assert pub.outbox.is_complete(a.referral_id)
    lines = (Path(ready.state_dir) / "status" / f"{a.referral_id}.jsonl").read_text().splitlines()
    assert [json.loads(x)["status"] for x in lines] == ["RECEIVED", "ACCEPTED"]
    assert json.loads(lines[1])["note"] == "synthetic note"
    assert driver.stats.dead_lettered == 1
    assert driver.stats.duplicates == 1


def test_cli_publish_outbox_and_status(
    ready: Settings, net: Network, codec: Codec, producer: KafkaProducer, tmp_path: Path
) -> None:
    env = cli_env_for(ready, tmp_path)
    runner = CliRunner()
    good = referral_json("hl-a", "NL")
    bad = referral_json("hl-a", "NL")
    bad["envelope"]["priority"] = "WHENEVER"
    f = tmp_path / "batch.json"
    f.write_text(json.dumps([good, bad]))

    res = runner.invoke(app, ["publish", str(f), "--as", "hl-a", "--json"], env=env)
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout)[str(f)]
    assert [p["referral_id"] for p in report["published"]] == [good["envelope"]["referral_id"]]
    assert report["rejected"][0]["row"] == "[1]"
    assert report["rejected"][0]["problems"][0].startswith("envelope.priority:")

    res = runner.invoke(app, ["outbox", "hl-a", "--json"], env=env)
    assert res.exit_code == 0, res.output
    [pending] = json.loads(res.stdout)
    assert pending["referral_id"] == good["envelope"]["referral_id"]
    assert pending["waiting_for"] == ["police-nl"]

    rid = good["envelope"]["referral_id"]
    res = runner.invoke(app, ["status", "police-nl", rid, "ACCEPTED"], env=env)
    assert res.exit_code == 2, "police-nl has not received it yet"
    assert "unknown referral" in res.output
    assert "in the inbox of police-nl" in res.output

    # police-nl receives it (addressed by hand), then reports a status
    records = read_topic(ready, ready.topic_names().intake, at_least=1)
    _address(producer, ready.topic_names().jurisdiction("NL"), records[0].value, rid, "police-nl")
    producer.flush(10)
    inbox = Inbox.for_org(ready, "police-nl")
    driver = SinkDriver(
        ready,
        "police-nl",
        codec,
        [ready.topic_names().jurisdiction("NL")],
        [InboxFolderSink(InboxFolderConfig(path="inbox"), ready)],
        inbox,
        producer=producer,
    )
    driver.open()
    try:
        _drain(driver, lambda: inbox.delivered() == [rid])
    finally:
        driver.close()
    # The lifecycle: NTD_SENT needs ACCEPTED first; one line names what may follow.
    res = runner.invoke(app, ["status", "police-nl", rid, "NTD_SENT"], env=env)
    assert res.exit_code == 1, res.output
    assert res.output.strip() == (
        "error: NTD_SENT refused after RECEIVED: allowed next are ASSESSED, ACCEPTED, "
        "REJECTED, REROUTED, DELAYED"
    )
    res = runner.invoke(app, ["status", "police-nl", rid, "ACCEPTED"], env=env)
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["status", "police-nl", rid, "NTD_SENT", "--note", "synthetic"], env=env
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["status", "police-nl", rid, "ACCEPTED"], env=env)
    assert res.exit_code == 1, "backwards"
    assert res.output.strip().startswith("error: ACCEPTED refused after NTD_SENT: allowed next")
    statuses = [
        codec.decode(r.value, expected=STATUS_UPDATE)[1]
        for r in read_topic(ready, ready.topic_names().status_intake, at_least=3)
    ]
    assert [(s["status"], s["origin_org"], s["emitted_by"]) for s in statuses] == [
        ("RECEIVED", "hl-a", "police-nl"),
        ("ACCEPTED", "hl-a", "police-nl"),
        ("NTD_SENT", "hl-a", "police-nl"),
    ]
    assert statuses[2]["note"] == "synthetic"
    assert len(_events(ready, codec, "STATUS_SENT", at_least=2)) == 2
