"""The web console: tokens, sessions, CSRF, security headers, escaping, the desks' actions.

The page tests use the real desks over real inbox files with the operator's records
handed in; the status actions send through the real status path on the test broker.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.contracts import Delivery
from broker.errors import ConfigError
from broker.ledger.store import Verification
from broker.ledger.views import HandoverRecord, Trace
from broker.lifecycle import LifecycleError
from broker.network import Network
from broker.origin.status_log import StatusLog
from broker.receiver.inbox import Inbox
from broker.wire.codec import Codec
from broker.wire.models import ItemOutcomeKind, ReferralStatus, StatusUpdate
from broker.wire.registry import EmbeddedRegistry
from console.app import CONTENT_SECURITY_POLICY, Console, build_app
from console.auth import OPERATOR, SESSION_COOKIE, Sessions, Tokens, token_env
from console.liaison import LiaisonDesk, status_for_items
from console.operator import DeadLetterRow, OperatorDesk, Replay
from console.server import make_console
from console.svg import heat_map, swim_lanes

with warnings.catch_warnings():  # starlette's notice about httpx, not about this code
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ORG = "police-nl"
LIAISON = "synthetic-liaison-token"
OPERATOR_TOKEN = "synthetic-operator-token"
URGENT = "0b7e4f6c-0000-4000-8000-00000000000a"
NORMAL = "0b7e4f6c-0000-4000-8000-00000000000b"
HOSTILE_CASE = "<script>alert(1)</script>\x1b[31m"
NOW = datetime.now(UTC)
#: What the test liaison desk was asked to send.
SENT: list[tuple[str, Any]] = []


def _delivery(rid: str, case: str, priority: str) -> Delivery:
    return Delivery(
        referral_id=rid,
        case_id=case,
        origin_org="hl-nl",
        value=b"",
        document={
            "envelope": {"priority": priority, "external_refs": [{"system": "ICCAM", "id": "7"}]}
        },
        topic="referrals.to.NL",
        partition=0,
        offset=1,
    )


def _record(event: str, actor: str, seconds: float, **kw: Any) -> HandoverRecord:
    return HandoverRecord(
        event_id=f"{event}-{seconds}",
        referral_id=URGENT,
        case_id="case-1",
        event=event,
        actor=actor,
        at=NOW - timedelta(seconds=100 - seconds),
        **kw,
    )


RECORDS = [
    _record("PUBLISHED", "hl-nl", 0, from_party="hl-nl", to_party=ORG, topic="referrals.intake"),
    _record(
        "ROUTED", "router", 1, from_party="hl-nl", to_party=ORG, topic="referrals.to.NL.urgent"
    ),
    _record("DELIVERED", ORG, 2, from_party="hl-nl", to_party=ORG, topic="referrals.to.NL.urgent"),
    _record("STATUS_SENT", ORG, 30, from_party=ORG, to_party="hl-nl", reason="ACCEPTED"),
]


class Liaison(LiaisonDesk):
    """The real desk; sending is recorded instead of published."""

    def send_status(self, given: str, status: ReferralStatus | None, **kw: Any) -> StatusUpdate:
        SENT.append((given, status))
        raise LifecycleError(ReferralStatus.RECEIVED, status or ReferralStatus.CLOSED)


class Operator(OperatorDesk):
    """The real desk over handed-in records; no Kafka."""

    def records(self, referral_id: str | None = None) -> list[HandoverRecord]:
        return [r for r in RECORDS if referral_id in (None, r.referral_id)]

    def trace(self, given: str) -> Trace:
        from broker.ledger.views import trace

        return trace(RECORDS, URGENT, self.network.deadlines, self.names, NOW)

    def dead_letters(self) -> list[DeadLetterRow]:
        return []

    def replays(self) -> list[Replay]:
        return []

    def verification(self) -> Verification:
        return Verification(len(RECORDS), None)

    def topics(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def client(tmp_path: Path, network: Network) -> TestClient:
    settings = Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")
    inbox = Inbox.for_org(settings, ORG)
    inbox.record(_delivery(NORMAL, "case-normal", "NORMAL"), "inbox_folder", NOW.timestamp())
    inbox.record(_delivery(URGENT, HOSTILE_CASE, "URGENT"), "inbox_folder", NOW.timestamp() - 60)
    inbox.close()
    codec = Codec(EmbeddedRegistry())
    liaison = Liaison(settings, network, ORG, codec)
    SENT.clear()
    console = Console(
        Tokens.from_env({token_env(ORG): LIAISON, token_env(OPERATOR): OPERATOR_TOKEN}, ORG),
        liaison,
        Operator(settings, network, codec),
        Sessions(),
    )
    return TestClient(build_app(console), base_url="http://127.0.0.1", follow_redirects=False)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def _login(client: TestClient, token: str) -> str:
    csrf = _csrf(client.get("/login").text)
    r = client.post("/login", data={"csrf": csrf, "token": token})
    assert r.status_code == 303, r.text
    return _csrf(client.get(r.headers["location"]).text)


def test_security_headers_and_the_session_cookie(client: TestClient) -> None:
    r = client.get("/login")
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    cookie = r.headers["set-cookie"].lower()
    assert f"{SESSION_COOKIE}=" in cookie
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "<script>" not in r.text.replace('<script src="/static/live.js" defer>', "")
    static = client.get("/static/live.js")
    assert static.status_code == 200
    assert "no-store" not in static.headers.get("cache-control", "")


def test_a_wrong_token_sees_nothing(client: TestClient) -> None:
    csrf = _csrf(client.get("/login").text)
    r = client.post("/login", data={"csrf": csrf, "token": "not-it"})
    assert r.status_code == 401
    assert "not accepted" in r.text
    for path in ("/inbox", "/inbox.csv", f"/referral/{URGENT}", "/operator", "/operator/ledger"):
        r = client.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/login", path
    rows = client.get("/inbox/rows")
    assert rows.status_code == 401
    assert URGENT not in rows.text


def test_forms_without_the_csrf_token_are_refused(client: TestClient) -> None:
    client.get("/login")
    assert client.post("/login", data={"token": LIAISON}).status_code == 403
    assert client.post("/login", data={"token": LIAISON, "csrf": "0" * 64}).status_code == 403
    csrf = _login(client, LIAISON)
    r = client.post(f"/referral/hl-nl/{URGENT}/status", data={"status": "ACCEPTED"})
    assert r.status_code == 403
    assert "CSRF" in r.text
    assert SENT == []
    r = client.post(f"/referral/hl-nl/{URGENT}/status", data={"status": "ACCEPTED", "csrf": csrf})
    assert r.status_code == 409  # reached the desk (which refuses here)
    assert SENT == [(URGENT, ReferralStatus.ACCEPTED)]
    assert client.post("/logout", data={}).status_code == 403
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303


@pytest.mark.parametrize(
    "fields", [{"status": "CLOSED"}, {"status": "REROUTED", "destination": "police-de"}]
)
def test_a_final_status_asks_first_and_sends_on_the_second_step(
    client: TestClient, fields: dict[str, str]
) -> None:
    csrf = _login(client, LIAISON)
    path = f"/referral/hl-nl/{URGENT}/status"
    asked = client.post(path, data={**fields, "csrf": csrf})
    assert asked.status_code == 200
    assert SENT == []  # nothing sent on the first click
    assert 'id="confirm"' in asked.text
    assert f"{fields['status']} is final" in asked.text
    for name, value in fields.items():
        assert f'name="{name}" value="{value}"' in asked.text
    assert 'name="confirm" value="yes"' in asked.text
    sent = client.post(path, data={**fields, "csrf": csrf, "confirm": "yes"})
    assert sent.status_code == 409  # reached the desk (which refuses here)
    assert [(URGENT, ReferralStatus(fields["status"]))] == SENT
    # Not final: sent at once.
    client.post(path, data={"status": "ACCEPTED", "csrf": csrf})
    assert SENT[-1] == (URGENT, ReferralStatus.ACCEPTED)


@pytest.mark.parametrize("path", ["/inbox", "/inbox/rows"])
def test_a_bad_since_names_the_field_and_shows_the_value_escaped(
    client: TestClient, path: str
) -> None:
    _login(client, LIAISON)
    r = client.get(path, params={"since": "<b>yesterday</b>"})
    assert r.status_code == 400
    assert "since: expected a duration" in r.text
    assert "--since" not in r.text
    assert "<b>yesterday" not in r.text
    assert "&lt;b&gt;yesterday" in r.text


def test_login_rotates_the_session(client: TestClient) -> None:
    client.get("/login")
    before = client.cookies[SESSION_COOKIE]
    _login(client, LIAISON)
    assert client.cookies[SESSION_COOKIE] != before


def test_the_inbox_lists_urgent_first_escaped_and_exports_csv(client: TestClient) -> None:
    _login(client, LIAISON)
    html = client.get("/inbox").text
    assert html.index(f'data-referral="{URGENT}"') < html.index(f'data-referral="{NORMAL}"')
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[31m" in html
    rows = client.get("/inbox/rows?q=case-normal").text
    assert NORMAL in rows
    assert URGENT not in rows
    csv = client.get("/inbox.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("referral_id,case_id,origin_org")
    assert client.get("/operator").status_code == 303  # the liaison is not the operator


def test_the_operator_sees_metadata_only_and_no_liaison_page(client: TestClient) -> None:
    _login(client, OPERATOR_TOKEN)
    flows = client.get("/operator")
    assert flows.status_code == 200
    assert "<svg" in flows.text
    assert "hl-nl" in flows.text
    trace = client.get(f"/operator/trace?id={URGENT[:8]}")
    assert "STATUS SENT" in trace.text
    assert 'class="lanes"' in trace.text
    assert "ledger intact" in client.get("/operator/ledger").text
    assert client.get("/inbox").status_code == 303
    assert client.get(f"/referral/{URGENT}").status_code == 303


def test_tokens_come_from_the_environment() -> None:
    assert token_env("police-nl") == "REFERRAL_CONSOLE_TOKEN_POLICE_NL"
    assert token_env(OPERATOR) == "REFERRAL_CONSOLE_TOKEN_OPERATOR"
    tokens = Tokens.from_env({token_env("police-de"): "x" * 20}, "police-nl")
    assert tokens.principals == []
    assert tokens.match("x" * 20) is None


def test_a_console_needs_a_token(tmp_path: Path, network: Network) -> None:
    settings = Settings(state_dir=tmp_path, bootstrap_servers="127.0.0.1:9")
    with pytest.raises(ConfigError, match="REFERRAL_CONSOLE_TOKEN_POLICE_NL"):
        make_console(settings, network, ORG, env={}, codec=Codec(EmbeddedRegistry()))


S, K = ReferralStatus, ItemOutcomeKind


@pytest.mark.parametrize(
    ("current", "outcomes", "expected"),
    [
        (S.NTD_SENT, {"a": K.REMOVED}, S.STILL_ONLINE),
        (S.STILL_ONLINE, {"a": K.REMOVED, "b": K.NOT_FOUND}, S.REMOVED),
        (S.NTD_SENT, {"a": K.REMOVED, "b": K.STILL_ONLINE}, S.STILL_ONLINE),
        (S.REFERRED_TO_LE, {"a": K.REMOVED, "b": K.NOT_ILLEGAL}, S.REMOVED),
        (S.RECEIVED, {"a": K.REMOVED}, None),
        (S.REFERRED_TO_LE, {"a": K.REMOVED}, None),
        (S.CLOSED, {"a": K.REMOVED, "b": K.REMOVED}, None),
    ],
)
def test_the_referral_status_an_item_outcome_carries(
    current: ReferralStatus, outcomes: dict[str, ItemOutcomeKind], expected: ReferralStatus | None
) -> None:
    if expected is None:
        with pytest.raises(LifecycleError):
            status_for_items(current, outcomes, ["a", "b"])
    else:
        assert status_for_items(current, outcomes, ["a", "b"]) is expected


def test_charts_escape_what_they_draw() -> None:
    from broker.ledger.views import Flows

    svg = heat_map(Flows(None, {"<b>org": {"NL": 3, "DE": 1}}, (), (), {}))
    assert "&lt;b&gt;org" in svg
    assert "<b>" not in svg
    assert 'style="' not in svg
    hostile = [
        HandoverRecord("e1", URGENT, "c", "PUBLISHED", "<i>x", NOW, from_party="<i>x", to_party="y")
    ]
    from broker.ledger.views import trace
    from broker.network import Deadlines
    from broker.wire.topics import TopicNames

    lanes = swim_lanes(trace(hostile, URGENT, Deadlines(), TopicNames(), NOW))
    assert "&lt;i&gt;x" in lanes
    assert "<i>" not in lanes


def test_a_loopback_console_refuses_other_host_names(tmp_path: Path, network: Network) -> None:
    settings = Settings(state_dir=tmp_path, bootstrap_servers="127.0.0.1:9")
    codec = Codec(EmbeddedRegistry())
    console = Console(
        Tokens.from_env({token_env(OPERATOR): OPERATOR_TOKEN}, None),
        None,
        Operator(settings, network, codec),
        Sessions(),
    )
    app = build_app(console, ["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://127.0.0.1:8780").get("/login").status_code == 200
    assert TestClient(app, base_url="http://rebound.example.org").get("/login").status_code == 400


def test_referral_console_names_the_missing_tokens(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    env = {token_env(ORG): "", token_env(OPERATOR): ""}
    result = CliRunner().invoke(
        app, ["--state-dir", str(tmp_path), "console", "--org", ORG, "--port", "0"], env=env
    )
    assert result.exit_code != 0
    assert "REFERRAL_CONSOLE_TOKEN_POLICE_NL" in result.output
    assert "REFERRAL_CONSOLE_TOKEN_OPERATOR" in result.output


ITEMS_RID = "0b7e4f6c-0000-4000-8000-00000000000c"
ITEM_A = "1a000000-0000-4000-8000-000000000001"
ITEM_B = "1b000000-0000-4000-8000-000000000002"


def _desk_with_items(settings: Settings, network: Network) -> LiaisonDesk:
    """A real desk over a real inbox that received ITEMS_RID and sent ACCEPTED, NTD_SENT."""
    delivery = _delivery(ITEMS_RID, "case-items", "NORMAL")
    delivery.document["body"] = {"items": [{"item_id": ITEM_A}, {"item_id": ITEM_B}]}
    inbox = Inbox.for_org(settings, ORG)
    inbox.record(delivery, "inbox_folder", NOW.timestamp())
    for sent in ("ACCEPTED", "NTD_SENT"):
        inbox.record_sent_status("hl-nl", ITEMS_RID, sent)
    inbox.close()
    return LiaisonDesk(settings, network, ORG, Codec(EmbeddedRegistry()))


def _offline(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")


def test_item_actions_send_what_referral_status_item_sends_and_read_back_from_the_inbox(
    provisioned: Settings, network: Network
) -> None:
    """Through the real status path on the test broker: signed records on status.intake,
    STATUS_SENT in the ledger, and the inbox's memory of what was sent read back."""
    from broker.kafka.clients import Clients
    from broker.outcomes import parse_item_specs
    from broker.wire.topics import Headers
    from console.ledger import records
    from tests.support.kafka import header, read_topic

    settings = provisioned
    _desk_with_items(settings, network).close()
    sender = Clients(settings, "test-console")
    desk = LiaisonDesk(settings, network, ORG, Codec(EmbeddedRegistry()), kafka=sender)
    first = desk.send_status(
        ITEMS_RID[:8], None, item_id=ITEM_A, outcome=ItemOutcomeKind.STILL_ONLINE, moved_to="fr"
    )
    # The same outcome as `referral status ... STILL_ONLINE --item ITEM_A=STILL_ONLINE:country=FR`.
    (cli,) = parse_item_specs(
        [f"{ITEM_A[:6]}=still_online:country=fr"],
        [ITEM_A, ITEM_B],
        first.item_outcomes[0].observed_at,
    )
    assert first.item_outcomes == (cli,)
    assert first.status is ReferralStatus.STILL_ONLINE  # one item still to go
    assert first.referral_version is None  # version 1
    assert desk._reported(desk._lookup(ITEMS_RID)[0]) == {
        ITEM_A: (ItemOutcomeKind.STILL_ONLINE, "FR")
    }
    # The next action reads the first one back from the inbox: both settled → REMOVED.
    middle = desk.send_status(ITEMS_RID, None, item_id=ITEM_A, outcome=ItemOutcomeKind.REMOVED)
    last = desk.send_status(ITEMS_RID, None, item_id=ITEM_B, outcome=ItemOutcomeKind.NOT_ILLEGAL)
    assert last.status is ReferralStatus.REMOVED
    assert last.item_outcomes[0].assessed_under == "NL"
    inbox = Inbox.for_org(settings, ORG)
    try:
        outcomes = inbox.sent_outcomes("hl-nl", ITEMS_RID)
        assert {k: o.outcome for k, o in outcomes.items()} == {
            ITEM_A: ItemOutcomeKind.REMOVED,
            ITEM_B: ItemOutcomeKind.NOT_ILLEGAL,
        }
        assert inbox.sent_statuses("hl-nl", ITEMS_RID)[-1] == "REMOVED"
    finally:
        inbox.close()
    assert not (settings.org_dir(ORG) / "console.sqlite3").exists()  # no side table
    desk.close()
    names = settings.topic_names()
    on_topic = read_topic(settings, names.status_intake, at_least=3)
    assert [header(r, Headers.REFERRAL_ID) for r in on_topic] == [ITEMS_RID] * 3
    events = records(settings, Codec(EmbeddedRegistry()), ITEMS_RID)
    assert [(e.event, e.actor, e.to_party) for e in events] == [("STATUS_SENT", ORG, "hl-nl")] * 3
    assert [e.reason for e in events] == [first.status.value, middle.status.value, "REMOVED"]


def test_item_actions_refuse_a_bad_host_and_an_unknown_item(
    tmp_path: Path, network: Network
) -> None:
    from broker.errors import ValidationFailed

    settings = _offline(tmp_path)  # nothing may reach a broker: there is none
    desk = _desk_with_items(settings, network)
    with pytest.raises(ValidationFailed, match="country code or an IP"):
        desk.send_status(
            ITEMS_RID, None, item_id=ITEM_A, outcome=ItemOutcomeKind.STILL_ONLINE, moved_to="x=1,ip"
        )
    with pytest.raises(ConfigError, match="has no item"):
        desk.send_status(ITEMS_RID, None, item_id="nope", outcome=ItemOutcomeKind.REMOVED)
    with pytest.raises(LifecycleError):
        desk.send_status(ITEMS_RID, ReferralStatus.ACCEPTED)
    inbox = Inbox.for_org(settings, ORG)
    try:
        assert inbox.sent_statuses("hl-nl", ITEMS_RID) == ["ACCEPTED", "NTD_SENT"]
        assert inbox.sent_outcomes("hl-nl", ITEMS_RID) == {}
    finally:
        inbox.close()


def test_inbox_records_carry_the_current_versions_position(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")
    inbox = Inbox.for_org(settings, ORG)
    try:
        inbox.record(_delivery(NORMAL, "case-normal", "NORMAL"), "inbox_folder", 1000.0)
        first = inbox.lookup(NORMAL)
        assert first is not None
        assert (first.partition, first.offset, first.version) == (0, 1, 1)
        amended = dataclasses.replace(
            _delivery(NORMAL, "case-normal", "NORMAL"), partition=2, offset=9, version=2
        )
        inbox.record(amended, "inbox_folder", 2000.0)
        now = inbox.lookup(NORMAL)
        assert now is not None
        assert (now.partition, now.offset, now.version, now.delivered_at) == (2, 9, 2, 1000.0)
    finally:
        inbox.close()


def test_a_long_trace_wraps_so_every_label_fits_the_card() -> None:
    from broker.ledger.views import trace
    from broker.network import Deadlines
    from broker.wire.topics import TopicNames
    from console.svg import LANES_WIDTH, MIN_STEP, lane_rows

    assert lane_rows(0) == []
    assert [len(b) for b in lane_rows(5)] == [5]
    assert [len(b) for b in lane_rows(19)] == [10, 9]  # two balanced bands
    hops = [
        HandoverRecord(
            f"e{i}",
            URGENT,
            "c",
            "STATUS_ROUTED",
            "router",
            NOW + timedelta(seconds=i),
            from_party=ORG,
            to_party="hl-nl",
            reason="STILL_ONLINE",
        )
        for i in range(19)
    ]
    svg = str(swim_lanes(trace(hops, URGENT, Deadlines(), TopicNames(), NOW)))
    width = int(re.search(r'<svg[^>]* width="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    assert width <= LANES_WIDTH
    xs = [
        float(x)
        for x in re.findall(r'<text x="([\d.]+)"[^>]*font-weight="bold" fill="#a0661a"', svg)
    ]
    assert len(xs) == 19  # every hop labelled
    assert max(xs) + 60 <= width  # "STATUS ROUTED" (about 110 px) ends inside the chart
    columns = sorted(set(xs))  # neighbours at least MIN_STEP apart (labels alternate rows)
    assert all(b - a >= MIN_STEP - 1 for a, b in itertools.pairwise(columns))
    assert "hops 1–10 of 19" in svg
    assert "hops 11–19 of 19" in svg


PARENT = "0b7e4f6c-0000-4000-8000-0000000000a1"
CHILD = "0b7e4f6c-0000-4000-8000-0000000000c1"


def test_the_referral_page_shows_versions_parent_and_children_without_content(
    tmp_path: Path, network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 2 with version 1 kept by the inbox folder, a parent the organisation received
    and a child re-referred elsewhere; no URL, hash or summary until a reveal."""
    import json

    import console.liaison as liaison_mod
    from connectors.inbox_folder import InboxFolderConfig, InboxFolderSink

    settings = _offline(tmp_path)
    desk = _desk_with_items(settings, network)
    inbox = Inbox.for_org(settings, ORG)
    inbox.record(_delivery(PARENT, "case-items", "NORMAL"), "inbox_folder", NOW.timestamp())
    inbox.record(
        dataclasses.replace(
            _delivery(ITEMS_RID, "case-items", "NORMAL"), offset=7, version=2, previous_version=1
        ),
        "inbox_folder",
    )
    inbox.close()
    sink = InboxFolderSink(InboxFolderConfig(path="orgs/police-nl/inbox"), settings)
    sink.open()
    for version in (1, 2):
        sink.deliver(
            dataclasses.replace(
                _delivery(ITEMS_RID, "case-items", "NORMAL"),
                version=version,
                previous_version=version - 1 or None,
            )
        )
    secret = "https://secret-item.example.org/case/7"
    envelope = {
        "referral_id": ITEMS_RID,
        "case_id": "case-items",
        "origin_org": "hl-nl",
        "version": 2,
        "parent_referral_id": PARENT,
        "handling": {"tlp": "AMBER"},
        "jurisdictions": [],
        "created_at": NOW,
        "priority": "NORMAL",
        "origin_country": "NL",
    }
    body = {"items": [{"item_id": ITEM_A, "url": secret, "hashes": []}], "summary": "synthetic"}
    fetched: list[tuple[int, int]] = []

    def fetch(record: Any) -> Any:
        fetched.append((record.partition, record.offset))
        return None

    monkeypatch.setattr(desk, "_fetch", fetch)
    monkeypatch.setattr(desk, "_open", lambda rec: {"envelope": envelope, "body": body})
    consulted: list[str] = []  # offline: the consultation log's events as (path) calls
    monkeypatch.setattr(desk, "_consulted", lambda record, path, why: consulted.append(path))
    rerouted = HandoverRecord(
        "r1", ITEMS_RID, "case-items", "REROUTED", "hl-nl", NOW, from_party="hl-nl",
        to_party="police-fr", reason=f"item {ITEM_B} moved to FR: referral {CHILD}",
    )  # fmt: skip
    monkeypatch.setattr("console.ledger.records", lambda *a, **k: [rerouted])

    view = desk.referral(ITEMS_RID)
    assert fetched == [(0, 7)]  # the current version's position
    assert view.version == 2
    assert [(v.version, v.sinks) for v in view.earlier] == [(1, ("inbox_folder",))]
    assert view.parent == liaison_mod.Linked(PARENT, True, "hl-nl")
    assert [(c.referral_id, c.item_id, c.country, c.here) for c in view.children] == [
        (CHILD, ITEM_B, "FR", False)
    ]
    assert view.items[0].url is None
    assert view.summary is None
    assert consulted == ["console-page"], "the page opened the body: one consultation"

    client = TestClient(
        build_app(
            Console(
                Tokens.from_env({token_env(ORG): LIAISON, token_env(OPERATOR): "x" * 24}, ORG),
                desk,
                Operator(settings, network, Codec(EmbeddedRegistry())),
                Sessions(),
            )
        ),
        base_url="http://127.0.0.1",
        follow_redirects=False,
    )
    _login(client, LIAISON)
    assert client.get(f"/referral/{ITEMS_RID}").headers["location"] == (
        f"/referral/hl-nl/{ITEMS_RID}"
    )
    html = client.get(f"/referral/hl-nl/{ITEMS_RID}").text
    assert 'id="version">v2' in html
    assert 'data-version="1"' in html
    assert f'<a class="mono" href="/referral/hl-nl/{PARENT}">' in html
    assert f'moved to FR: <span class="mono">{CHILD}</span>' in html
    assert secret not in html
    assert "secret-item.example.org" not in html
    assert json.dumps(secret) not in html
    assert consulted == ["console-page", "console-page"]

    # The moved item went to police-nl too: the history's REROUTED row links the child's page.
    history = html.split('id="history"', 1)[1]
    assert CHILD not in history  # police-nl took no part in that re-referral
    inbox = Inbox.for_org(settings, ORG)
    inbox.record(_delivery(CHILD, "case-items", "NORMAL"), "inbox_folder", NOW.timestamp())
    inbox.close()
    to_us = dataclasses.replace(rerouted, to_party="police-nl")
    monkeypatch.setattr("console.ledger.records", lambda *a, **k: [to_us])
    history = client.get(f"/referral/hl-nl/{ITEMS_RID}").text.split('id="history"', 1)[1]
    assert f'moved to FR: referral <a class="mono kin" href="/referral/hl-nl/{CHILD}">' in history


def test_the_sent_page_shows_the_outcomes_the_origin_verified(
    tmp_path: Path, network: Network
) -> None:
    """The origin's side: its outbox and the item outcomes its inbox verified, no side table."""
    from broker.origin.outbox import Outbox, ReferralFacts
    from broker.outcomes import ItemRef, Reroute
    from broker.wire.models import HostingEvidence, ItemOutcome

    origin = "hl-nl"
    settings = Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")
    box = Outbox.for_org(settings, origin)
    box.add(
        ITEMS_RID, "case-items", "referrals.intake", b"v", [], [ORG],
        about=ReferralFacts(items=(ItemRef(ITEM_A, "NL"), ItemRef(ITEM_B, "NL"))),
    )  # fmt: skip
    box.request_reroute(Reroute(ITEMS_RID, ITEM_B, "FR", CHILD))
    box.close()
    inbox = StatusLog.for_org(settings, origin)
    inbox.record_outcomes(
        ITEMS_RID,
        ORG,
        [
            ItemOutcome(item_id=ITEM_A, outcome=ItemOutcomeKind.REMOVED, observed_at=NOW),
            ItemOutcome(
                item_id=ITEM_B,
                outcome=ItemOutcomeKind.STILL_ONLINE,
                observed_at=NOW,
                hosting=HostingEvidence(country="FR"),
            ),
        ],
        int(NOW.timestamp() * 1000),
    )
    inbox.close()
    codec = Codec(EmbeddedRegistry())
    desk = LiaisonDesk(settings, network, origin, codec)
    client = TestClient(
        build_app(
            Console(
                Tokens.from_env(
                    {token_env(origin): LIAISON, token_env(OPERATOR): "y" * 24}, origin
                ),
                desk,
                Operator(settings, network, codec),
                Sessions(),
            )
        ),
        base_url="http://127.0.0.1",
        follow_redirects=False,
    )
    _login(client, LIAISON)
    html = client.get("/sent").text
    assert f'data-referral="{ITEMS_RID}"' in html
    assert "2 items: 1 removed, 1 moved to FR" in html
    assert f'data-item="{ITEM_B}"' in html
    assert "re-referred to FR" in html
    assert "(queued)" in html
    assert not (settings.org_dir(origin) / "console.sqlite3").exists()
