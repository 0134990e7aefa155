"""A refusal is an answer (issue 13): a case system's 4xx reaches the origin as a signed REJECTED.

A signed network (no plain referrals) on the embedded broker: hotline ``hl-a``
publishes through its drop folder, the router routes, ``police-fr``'s webhook
answers 400 for some referrals. Each refused referral is dead-lettered once,
``hl-a`` receives a verified REJECTED with the reason code, and its outbox
stops republishing it (``republish_after`` is one second, so a missed answer
would show as many sends). A delivery that succeeds after an outage records
RESOLVED, so its dead letter reads as stale.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.errors import DeliveryError
from broker.kafka.deadletter import H_STAGE
from broker.ledger.events import decode_events
from broker.ledger.views import HandoverRecord, resolved_dead_letters
from broker.network import Network
from broker.receiver.inbox import Inbox, SinkRefusal
from broker.security.keys import ROUTER
from broker.wire.codec import Codec
from cli.main import app
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import (
    ENV,
    HookServer,
    codec_for,
    hook_server,
    referral_json,
    wait_for,
)
from tests.support.kafka import cli_env, header, provision_network, read_topic, start_router
from tests.support.security import give_keys, keyed_network

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture
def hook() -> Iterator[HookServer]:
    with hook_server() as server:
        yield server


def _signed(provisioned: Settings, tmp_path: Path, hook: HookServer) -> Network:
    trust = tmp_path / "trust.toml"
    give_keys(provisioned, trust, "hl-a", "police-fr", ROUTER)
    network = keyed_network(trust, webhook_url=hook.url, republish_after=1)
    provision_network(provisioned, network)
    return network


def _status_lines(settings: Settings, origin: str) -> list[dict[str, Any]]:
    folder = Path(settings.state_dir) / "orgs" / origin / "status"
    return [json.loads(line) for f in folder.glob("*.jsonl") for line in f.read_text().splitlines()]


def _ledger(settings: Settings, codec: Codec, kind: str) -> list[dict[str, Any]]:
    out = []
    for r in read_topic(settings, settings.topic_names().ledger, idle=0.5, timeout=10):
        out += [e for e in decode_events(codec, r.value) if e["event"] == kind]
    return out


def test_a_refused_referral_is_dead_lettered_once_and_answered_with_a_signed_rejected(
    provisioned: Settings, tmp_path: Path, hook: HookServer
) -> None:
    network = _signed(provisioned, tmp_path, hook)
    codec = codec_for(provisioned)
    refs = [referral_json("hl-a", "FR") for _ in range(6)]
    ids = [str(r["envelope"]["referral_id"]) for r in refs]
    refused, accepted = set(ids[:2]), set(ids[2:])
    hook.refuse |= refused
    # One delivery meets an outage (three attempts, all 500): dead-lettered, later resolved.
    hook.script = [500, 500, 500]
    with ExitStack() as stack:
        stack.callback(start_router(provisioned, network, codec).stop)
        rts = {}
        for org in ("hl-a", "police-fr"):
            rt = ConnectorRuntime(provisioned, network, org, codec, env=ENV, republish_after=1)
            stack.callback(rt.stop)
            rts[org] = rt.start()
        drop = Path(provisioned.state_dir) / "orgs" / "hl-a" / "drop"
        (drop / "export.json").write_text(json.dumps(refs))
        outbox = rts["hl-a"].outbox
        wait_for(
            lambda: outbox.count() == len(ids) and not outbox.pending(),
            60,
            "every referral published, then received or refused",
        )
        # Several republish periods more: a refused referral must not be sent again.
        sends = {rid: outbox.get(rid).attempts for rid in ids}  # type: ignore[union-attr]
        time.sleep(4)
        after = {rid: outbox.get(rid).attempts for rid in ids}  # type: ignore[union-attr]
        refusals = rts["police-fr"].inbox.refusals()
        open_failures = rts["police-fr"].inbox.open_failures()
        refused_now = outbox.refused()

    assert after == sends, "nothing is republished once every destination answered"
    assert {p.referral_id for p in refused_now} == refused
    assert all(p.refused_by[0].reason == "HTTP_400" for p in refused_now)
    assert {r.referral_id for r in refusals} == refused
    assert sorted(hook.referral_ids()) == sorted(accepted), "each accepted one delivered once"
    posts = [r["id"] for r in hook.requests if r["status"] == 400]
    assert sorted(posts) == sorted(refused), "each refused one POSTed once, never again"

    dead = read_topic(provisioned, provisioned.topic_names().deadletter, idle=0.5, timeout=10)
    deliver = [d for d in dead if header(d, H_STAGE) == "DELIVER"]
    assert len(deliver) == 1 + len(refused), "one outage failure plus one per refusal"

    statuses = _status_lines(provisioned, "hl-a")
    rejected = [s for s in statuses if s["status"] == "REJECTED"]
    assert sorted(s["referral_id"] for s in rejected) == sorted(refused)
    assert {s["reason_code"] for s in rejected} == {"HTTP_400"}
    assert all(s["emitted_by"] == "police-fr" for s in rejected)
    received = {s["referral_id"] for s in statuses if s["status"] == "RECEIVED"}
    assert received == accepted

    res = runner.invoke(app, ["dlq", "list", "--json"], env=cli_env(provisioned))
    assert res.exit_code == 0, res.output
    listed = json.loads(res.stdout)
    assert sorted(d["resolved"] for d in listed if d["stage"] == "DELIVER") == [False] * len(
        refused
    ) + [True], "the outage's dead letter reads as resolved, the refusals do not"

    resolved = _ledger(provisioned, codec, "RESOLVED")
    assert open_failures == 0, "the outage's failures were resolved by the later delivery"
    assert len(resolved) == 1
    assert {e["referral_id"] for e in resolved} <= accepted


# -- the pure parts: no broker -------------------------------------------------------------------


def test_a_refusal_is_remembered_once_with_its_first_emission_time(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.sqlite3")
    first = SinkRefusal("hl-a", "r-1", "case-1", "webhook", "HTTP_400", 1_000)
    assert inbox.record_refusal(first) == first
    again = SinkRefusal("hl-a", "r-1", "case-1", "webhook", "HTTP_422", 2_000)
    assert inbox.record_refusal(again) == first, "a repeat answers with the first REJECTED"
    assert inbox.refusal("hl-b", "r-1") is None, "another origin's referral is another one"
    assert [r.referral_id for r in inbox.refusals()] == ["r-1"]
    inbox.close()


def test_transient_failures_stay_open_until_a_delivery_resolves_them(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.sqlite3")
    assert inbox.record_failure("hl-a", "r-1", "webhook") == 1
    assert inbox.record_failure("hl-a", "r-1", "webhook") == 2
    assert inbox.record_failure("hl-a", "r-2", "webhook") == 1
    assert inbox.open_failures() == 2
    assert inbox.resolve_failures("hl-a", "r-1", "webhook") == 2
    assert inbox.resolve_failures("hl-a", "r-1", "webhook") == 0, "resolved once"
    assert inbox.open_failures() == 1
    inbox.close()


def test_delivery_error_is_transient_unless_said_permanent() -> None:
    assert (DeliveryError("x").permanent, DeliveryError("x").reason) == (False, "UNAVAILABLE")
    refused = DeliveryError("webhook: refused with HTTP 410", permanent=True, reason="HTTP_410")
    assert (refused.permanent, refused.reason) == (True, "HTTP_410")


def test_a_deliver_dead_letter_is_resolved_by_a_later_resolved_of_the_same_sink() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    records = [
        HandoverRecord("e1", "r-1", "c", "RESOLVED", "police-fr", at),
        HandoverRecord("e2", "r-2", "c", "DELIVERED", "police-fr", at),
    ]
    ms = int(at.timestamp() * 1000)
    letters = [
        ("0:1", "r-1", "DELIVER", "police-fr", ms - 10),  # before the delivery: stale
        ("0:2", "r-1", "DELIVER", "police-fr", ms + 10),  # after it: still open
        ("0:3", "r-1", "DELIVER", "police-de", ms - 10),  # another sink's
        ("0:4", "r-1", "VERIFY", "police-fr", ms - 10),  # not a delivery failure
        ("0:5", "r-2", "DELIVER", "police-fr", ms - 10),  # delivered, but never failed before
        ("0:6", None, "DELIVER", "police-fr", ms - 10),
    ]
    assert resolved_dead_letters(letters, records) == {"0:1"}
