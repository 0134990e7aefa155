"""Connector pieces without a broker: outbox, inbox, file parsing, settings, webhook retries."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from broker.config import Settings
from broker.contracts import Delivery, jsonable
from broker.errors import ConfigError, DeliveryError, ValidationFailed
from broker.origin.outbox import Outbox
from broker.receiver.inbox import Inbox
from connectors.formats import (
    CSV_COLUMNS,
    csv_column_of,
    csv_row_to_referral,
    read_referral_file,
)
from connectors.runtime import ConnectorRuntime, parse_connector_settings
from connectors.webhook import SignedPoster, WebhookConfig, sign, verify
from tests.support.connectors import hook_server, make_network, referral_json

RID = "7d1c2a9e-0b1f-4c55-9a7e-1f0e6a4c2b10"


def _delivery(referral_id: str = RID) -> Delivery:
    return Delivery(
        referral_id=referral_id,
        case_id="case-1",
        origin_org="hl-a",
        value=b"\x00",
        document={"envelope": {"referral_id": referral_id}},
        topic="referrals.to.NL",
        partition=0,
        offset=7,
    )


# -- outbox ---------------------------------------------------------------------------------------


def test_outbox_clears_each_destination_on_received(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    headers = [("referral.id", RID.encode())]
    assert box.add(RID, "case-1", "referrals.intake", b"abc", headers, ["police-nl", "police-de"])
    assert not box.add(RID, "case-1", "referrals.intake", b"other", headers, ["police-nl"])
    entry = box.get(RID)
    assert entry is not None
    assert entry.value == b"abc"
    assert entry.headers == headers
    [pending] = box.pending()
    assert pending.waiting_for == ("police-de", "police-nl")
    assert box.mark_received(RID, "police-nl")
    assert not box.mark_received(RID, "police-nl"), "a repeated RECEIVED changes nothing"
    assert not box.mark_received(RID, "police-fr"), "an unexpected org changes nothing"
    [pending] = box.pending()
    assert pending.waiting_for == ("police-de",)
    assert pending.received_by == ("police-nl",)
    assert box.mark_received(RID, "police-de")
    assert box.pending() == []
    assert box.is_complete(RID)
    box.close()


def test_outbox_due_respects_the_timeout_and_counts_attempts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    box.add(RID, "case-1", "referrals.intake", b"abc", [], ["police-nl"], now=1000.0)
    assert box.due(60, now=1030.0) == []
    [due] = box.due(60, now=1061.0)
    assert due.referral_id == RID
    assert due.value == b"abc"
    box.mark_sent(RID, now=1061.0)
    assert box.due(60, now=1100.0) == []
    assert box.pending()[0].attempts == 2
    box.close()


def test_outbox_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    box.add(RID, "case-1", "referrals.intake", b"abc", [], ["police-nl"])
    box.close()
    again = Outbox(path)
    assert [p.referral_id for p in again.pending()] == [RID]
    again.close()


# -- inbox ----------------------------------------------------------------------------------------


def test_inbox_remembers_deliveries_per_sink_and_counts_duplicates(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.sqlite3")
    assert not inbox.has("hl-a", RID, "inbox_folder")
    assert inbox.record(_delivery(), "inbox_folder")
    assert not inbox.record(_delivery(), "inbox_folder")
    assert inbox.has("hl-a", RID, "inbox_folder")
    assert not inbox.has("hl-a", RID, "webhook")
    assert inbox.count_duplicate("hl-a", RID, "inbox_folder") == 1
    assert inbox.count_duplicate("hl-a", RID, "inbox_folder") == 2
    assert inbox.duplicates == 2
    record = inbox.lookup(RID)
    assert record is not None
    assert record.origin_org == "hl-a"
    assert record.duplicates == 2
    assert inbox.lookup("00000000-0000-4000-8000-000000000000") is None
    inbox.close()


def test_inbox_identity_is_origin_and_referral_id(tmp_path: Path) -> None:
    """Another origin re-using a referral id first does not make the real one a repeat."""
    inbox = Inbox(tmp_path / "inbox.sqlite3")
    squatter = replace(_delivery(), origin_org="hl-b")
    assert inbox.record(squatter, "inbox_folder")
    assert not inbox.has("hl-a", RID, "inbox_folder")
    assert inbox.record(_delivery(), "inbox_folder")
    assert inbox.origins_of(RID) == ["hl-b", "hl-a"]
    hl_a = inbox.lookup(RID, "hl-a")
    assert hl_a is not None
    assert hl_a.origin_org == "hl-a"
    inbox.record_sent_status("hl-a", RID, "ACCEPTED")
    inbox.record_sent_status("hl-a", RID, "CLOSED")
    assert inbox.sent_statuses("hl-a", RID) == ["ACCEPTED", "CLOSED"]
    assert inbox.sent_statuses("hl-b", RID) == []
    inbox.close()


def test_inbox_of_an_earlier_version_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "inbox.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE delivered (referral_id TEXT NOT NULL, sink TEXT NOT NULL,"
            " case_id TEXT NOT NULL, origin_org TEXT NOT NULL, topic TEXT NOT NULL,"
            ' partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, delivered_at REAL NOT NULL,'
            " duplicates INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (referral_id, sink))"
        )
        db.execute(
            "INSERT INTO delivered VALUES (?, 'inbox_folder', 'case-1', 'hl-a', 't', 0, 1, 1.0, 0)",
            (RID,),
        )
    inbox = Inbox(path)
    assert inbox.has("hl-a", RID, "inbox_folder")
    inbox.close()
    assert Inbox(path).delivered() == [RID]


# -- file parsing ---------------------------------------------------------------------------------


def test_json_list_and_jsonl_rows_are_labelled(tmp_path: Path) -> None:
    a, b = referral_json("hl-a"), referral_json("hl-a")
    (tmp_path / "x.json").write_text(json.dumps([a, b]))
    (tmp_path / "y.jsonl").write_text(json.dumps(a) + "\n\n{broken\n" + json.dumps(b) + "\n")
    rows = read_referral_file(tmp_path / "x.json")
    assert [label for label, _ in rows] == ["[0]", "[1]"]
    rows = read_referral_file(tmp_path / "y.jsonl")
    assert [label for label, _ in rows] == ["line 1", "line 3", "line 4"]
    assert isinstance(rows[1][1], ValidationFailed)


def test_rows_without_id_are_left_for_the_publisher_to_name(tmp_path: Path) -> None:
    data = referral_json("hl-a")
    del data["envelope"]["referral_id"]
    (tmp_path / "x.json").write_text(json.dumps([data, data]))
    rows = read_referral_file(tmp_path / "x.json")
    assert [row["envelope"].get("referral_id") for _, row in rows if isinstance(row, dict)] == [
        None,
        None,
    ], "ids come from the origin and case (publisher), never from the file's bytes"


def _csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_csv_row_maps_to_a_referral() -> None:
    data = csv_row_to_referral(
        {
            "case_id": "case-9",
            "url": "https://host.example.org/a",
            "hashes": "sha256:" + "ab" * 32 + ";MD5:" + "cd" * 16,
            "jurisdictions": "de:hosting;FR:VICTIM_LOCATION",
            "hosting_ip": "192.0.2.1",
            "hosting_asn": "64500",
            "recipients": "police-de; police-fr",
            "annotations": "GENERATIVE_AI",
        }
    )
    env, item = data["envelope"], data["body"]["items"][0]
    assert env["case_id"] == "case-9"
    assert env["priority"] == "NORMAL"
    assert env["jurisdictions"] == [
        {"country": "DE", "basis": "HOSTING"},
        {"country": "FR", "basis": "VICTIM_LOCATION"},
    ]
    assert env["handling"]["recipients"] == ["police-de", "police-fr"]
    assert [h["algorithm"] for h in item["hashes"]] == ["SHA256", "MD5"]
    assert item["hosting"] == {"ip": "192.0.2.1", "asn": 64500}


def test_csv_cell_problems_name_the_column_not_the_value() -> None:
    with pytest.raises(ValidationFailed) as info:
        csv_row_to_referral(
            {
                "case_id": "c",
                "url": "https://h.example.org",
                "hashes": "deadbeef",
                "hosting_asn": "x1",
            }
        )
    assert info.value.problems == [
        "hosting_asn: not a whole number",
        "hashes: entry 1 is not ALGORITHM:HEX",
    ]
    assert "deadbeef" not in str(info.value.problems)


@pytest.mark.parametrize(
    ("path", "column"),
    [
        ("envelope.case_id", "case_id"),
        ("envelope.handling.tlp", "tlp"),
        ("envelope.handling", "recipients"),
        ("body.items.0.url", "url"),
        ("body.items.0.hashes.0", "hashes"),
        ("body.items.0.hosting.ip", "hosting_ip"),
        ("body.classification.victim_age_group", "victim_age_group"),
        ("body.timeline.received_at", "received_at"),
        ("body.summary", "summary"),
    ],
)
def test_csv_column_of_field_paths(path: str, column: str) -> None:
    assert csv_column_of(path) == column


def test_csv_unknown_column_rejects_the_file(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("case_id,url,colour\nc,https://h.example.org,red\n")
    [(label, problem)] = read_referral_file(tmp_path / "x.csv")
    assert label == "header"
    assert isinstance(problem, ValidationFailed)
    assert problem.problems == ["colour: unknown column"]


def test_jsonable_renders_datetimes_as_utc_iso() -> None:
    import datetime as dt

    value = {"at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "xs": [b"\x01"]}
    assert jsonable(value) == {"at": "2024-01-02T03:04:05Z", "xs": ["01"]}


# -- settings -------------------------------------------------------------------------------------


def test_connector_settings_report_every_problem_on_its_own_line(tmp_path: Path) -> None:
    network = make_network()
    org = network.organisation("police-fr")
    broken = org.model_copy(
        update={
            "connectors": {
                "webhook": {"url": "ftp://x.invalid", "secret_env": "NOPE", "max_attempts": 0},
                "inbox_folder": {},
                "telepathy": {"x": 1},
            }
        }
    )
    _, problems = parse_connector_settings(broken)
    assert problems == [
        "police-fr: connectors.webhook.max_attempts: Input should be greater than or equal to 1",
        "police-fr: connectors.inbox_folder.path: Field required",
        "police-fr: connectors.telepathy: unknown connector kind (known: drop_folder, "
        "http_intake, inbox_folder, known, outbox, sqlite, status_folder, status_webhook, takedown,"
        " webhook)",
    ]


def test_runtime_refuses_missing_secret_and_bad_url_before_starting(tmp_path: Path) -> None:
    network = make_network(webhook_url="ftp://cases.example.invalid/hook")
    settings = Settings(
        bootstrap_servers="127.0.0.1:9", state_dir=tmp_path, network_file=tmp_path / "n.toml"
    )
    with pytest.raises(ConfigError) as info:
        ConnectorRuntime(settings, network, "police-fr", codec=None, env={})  # type: ignore[arg-type]
    # the secret is checked first; the URL is never quoted
    assert str(info.value) == (
        "police-fr: connectors.webhook.secret_env: environment variable "
        "TEST_WEBHOOK_SECRET is not set"
    )
    with pytest.raises(ConfigError) as info:
        ConnectorRuntime(
            settings,
            network,
            "police-fr",
            codec=None,  # type: ignore[arg-type]
            env={"TEST_WEBHOOK_SECRET": "s"},
            producer=object(),
        )
    assert str(info.value) == (
        "police-fr: connectors.webhook.url: URL must be absolute http(s)://host/..."
    )
    assert "cases.example.invalid" not in str(info.value)


def test_runtime_refuses_missing_token_env(tmp_path: Path) -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path)
    with pytest.raises(ConfigError, match="TEST_TOKEN_HL_B is not set"):
        ConnectorRuntime(
            settings,
            make_network(),
            "hl-b",
            codec=None,  # type: ignore[arg-type]
            env={},
            producer=object(),
        )


# -- webhook signing and retries ------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_the_body() -> None:
    secret = SecretStr("k")
    assert sign(secret, b"{}") == (
        "sha256=" + __import__("hmac").new(b"k", b"{}", "sha256").hexdigest()
    )
    assert verify(secret, b"{}", sign(secret, b"{}"))
    assert not verify(secret, b"{ }", sign(secret, b"{}"))
    assert not verify(secret, b"{}", None)


def _poster(url: str, attempts: int = 4) -> SignedPoster:
    cfg = WebhookConfig(
        url=url, secret_env="X", timeout=2, max_attempts=attempts, backoff_initial=0.01
    )
    poster = SignedPoster(cfg, SecretStr("synthetic-webhook-secret"))
    poster.open()
    return poster


def test_webhook_retries_5xx_then_succeeds() -> None:
    with hook_server() as hook:
        hook.script = [503, 500]
        poster = _poster(hook.url)
        try:
            assert poster.post({"a": 1}, RID, "webhook") == 200
        finally:
            poster.close()
        assert [r["status"] for r in hook.requests] == [503, 500, 200]
        assert all(r["signed"] for r in hook.requests)
        assert all(r["id"] == RID for r in hook.requests)


def test_webhook_does_not_retry_4xx() -> None:
    with hook_server() as hook:
        hook.script = [422, 200]
        poster = _poster(hook.url)
        try:
            with pytest.raises(DeliveryError, match="HTTP 422 \\(not retried\\)"):
                poster.post({"a": 1}, RID, "webhook")
        finally:
            poster.close()
        assert len(hook.requests) == 1


def test_webhook_gives_up_after_max_attempts_without_quoting_the_url() -> None:
    with hook_server() as hook:
        hook.script = [502, 502, 502]
        poster = _poster(hook.url, attempts=3)
        try:
            with pytest.raises(DeliveryError) as info:
                poster.post({"a": 1}, RID, "webhook")
        finally:
            poster.close()
        assert str(info.value) == "webhook: gave up after 3 attempt(s): HTTP 502"
        assert len(hook.requests) == 3


def test_webhook_connection_failure_is_retried_then_reported() -> None:
    from broker.kafka.embedded import free_port

    poster = _poster(f"http://127.0.0.1:{free_port()}/hook", attempts=2)
    started = time.monotonic()
    try:
        with pytest.raises(
            DeliveryError, match="gave up after 2 attempt\\(s\\): connection failed"
        ):
            poster.post({"a": 1}, RID, "webhook")
    finally:
        poster.close()
    assert time.monotonic() - started < 5
    assert poster.attempts == 2


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    cfg = WebhookConfig(
        url="https://x.example.org/h", secret_env="X", backoff_initial=1, backoff_max=4
    )
    poster = SignedPoster(cfg, SecretStr("s"))
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (6, 4)]:
        samples = [poster.backoff(attempt) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling / 2, "jitter spreads over the whole range"


def test_sinks_keep_two_origins_referrals_under_one_id_apart(tmp_path: Path) -> None:
    """Another origin re-using a referral id gets its own file and row, never replacing one."""
    import sqlite3

    from connectors.inbox_folder import InboxFolderConfig, InboxFolderSink
    from connectors.sqlite_sink import SqliteCaseConfig, SqliteCaseSink

    settings = Settings(state_dir=tmp_path)
    real, squatter = _delivery(), replace(_delivery(), origin_org="hl-b")
    folder = InboxFolderSink(InboxFolderConfig(path="inbox"), settings)
    folder.open()
    folder.deliver(squatter)
    folder.deliver(real)
    folder.deliver(real)  # a repeat of the real one: its own file again
    names = sorted(p.name for p in (tmp_path / "inbox").glob("*.json"))
    assert names == [f"{RID}.hl-a.json", f"{RID}.json"]
    first = json.loads((tmp_path / "inbox" / f"{RID}.json").read_text())
    assert first["delivery"]["origin_org"] == "hl-b"

    # A case table of an earlier version (keyed by referral id alone) is re-keyed on open.
    db_path = tmp_path / "cases.sqlite3"
    with sqlite3.connect(db_path) as db:
        db.execute(
            "CREATE TABLE cases (referral_id TEXT PRIMARY KEY, case_id TEXT NOT NULL,"
            " origin_org TEXT NOT NULL, priority TEXT NOT NULL, tlp TEXT NOT NULL,"
            " jurisdictions TEXT NOT NULL, referral TEXT NOT NULL, topic TEXT NOT NULL,"
            " received_at REAL NOT NULL, updated_at REAL NOT NULL)"
        )
        db.execute(
            "INSERT INTO cases VALUES (?, 'case-1', 'hl-b', 'NORMAL', 'GREEN', '[]', '{}', 't',"
            " 1.0, 1.0)",
            (RID,),
        )
    table = SqliteCaseSink(SqliteCaseConfig(path=str(db_path)), settings)
    table.open()
    table.deliver(real)
    table.deliver(real)
    table.close()
    with sqlite3.connect(db_path) as db:
        rows = sorted(db.execute("SELECT origin_org, referral_id FROM cases").fetchall())
    assert rows == [("hl-a", RID), ("hl-b", RID)]
