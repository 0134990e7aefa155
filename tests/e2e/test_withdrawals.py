"""An amendment that drops recipients withdraws the earlier version from them (issue 21).

A signed network on the embedded broker: ``hl-a`` refers a case hosted in NL
that concerns DE (police-nl: inbox folder, police-de: SQLite case table), then
amends it to FR only (police-fr: webhook). police-nl and police-de get a
withdrawal of version 1 signed by hl-a: the folder moves the case to its
history and notes the withdrawal, the case table marks the row, both inboxes
list it as WITHDRAWN, and the ledger records it (hl-a's STATUS_SENT, the
router's STATUS_ROUTED, each recipient's DELIVERED), all signed. A withdrawal
forged by another member is refused and changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.deadletter import H_MESSAGE, H_STAGE
from broker.origin.withdrawal import WITHDRAWAL_KIND, withdrawal_update
from broker.security.keys import OrgKeys, key_dir
from broker.security.signing import StatusContext, sign
from broker.wire.codec import Codec
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers
from connectors.runtime import ConnectorRuntime
from tests.e2e.test_outcomes import cli, env_for, signed_network, three_items
from tests.support.connectors import ENV, HookServer, codec_for, hook_server, wait_for
from tests.support.kafka import header, read_topic, start_network

pytestmark = pytest.mark.slow

ORGS = ("hl-a", "police-nl", "police-de", "police-fr")


@pytest.fixture
def hook() -> Any:
    with hook_server() as server:
        yield server


def _nl_and_de() -> dict[str, Any]:
    raw = three_items("hl-a")
    for item in raw["body"]["items"]:
        item["hosting"] = {"country": "NL", "provider": "Example Hosting"}
    raw["envelope"]["jurisdictions"] = [
        {"country": "NL", "basis": "HOSTING", "derived": False},
        {"country": "DE", "basis": "VICTIM_LOCATION", "derived": False},
    ]
    return raw


def _fr_only(raw: dict[str, Any]) -> dict[str, Any]:
    amended: dict[str, Any] = json.loads(json.dumps(raw))
    for item in amended["body"]["items"]:
        item["hosting"] = {"country": "FR", "provider": "Example Hosting"}
    amended["envelope"]["jurisdictions"] = [{"country": "FR", "basis": "HOSTING", "derived": False}]
    return amended


def _row(db: Path, rid: str) -> tuple[Any, ...] | None:
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT version, withdrawn_version, withdrawn_at FROM cases WHERE referral_id = ?",
            (rid,),
        ).fetchone()
    return tuple(found) if found else None


def _forge(settings: Settings, codec: Codec, rts: dict[str, ConnectorRuntime], rid: str) -> bytes:
    """police-fr writes a "withdrawal by hl-a" straight onto police-nl's lane, signed with
    its own key; the value sent."""
    entry = rts["hl-a"].outbox.get(rid)
    assert entry is not None
    datum = withdrawal_update(entry, "hl-a", "police-nl").to_avro()
    value = codec.encode(STATUS_UPDATE, datum)
    fr = OrgKeys.load(key_dir(settings, "police-fr"), "police-fr")
    assert fr is not None
    headers = [
        (Headers.DESTINATION_ORGS, b"police-nl"),
        (Headers.RECORD_KIND, WITHDRAWAL_KIND),
        *sign(fr.signing, fr.signing_id, StatusContext.of(datum), value),
    ]
    producer = clients.producer(settings, role="test-forger")
    try:
        topic = settings.topic_names().jurisdiction("NL")
        producer.send(topic, key=rid.encode(), value=value, headers=headers).get(timeout=10)
    finally:
        producer.close(5)
    return value


def test_an_amendment_that_drops_recipients_withdraws_the_earlier_version_from_them(
    settings: Settings, tmp_path: Path, hook: HookServer
) -> None:
    network = signed_network(settings, tmp_path, hook.url, *ORGS)
    env = env_for(settings, tmp_path)
    codec = codec_for(settings)
    raw = _nl_and_de()
    rid = str(raw["envelope"]["referral_id"])
    state = Path(settings.state_dir) / "orgs"
    folder = state / "police-nl" / "inbox"
    db = state / "police-de" / "cases.sqlite3"
    with ExitStack() as stack:
        rts = start_network(stack, settings, network, codec, ORGS, env=ENV, republish_after=1)
        outbox = rts["hl-a"].outbox
        (tmp_path / "v1.json").write_text(json.dumps(raw))
        cli(env, "publish", str(tmp_path / "v1.json"), "--as", "hl-a")
        wait_for(lambda: outbox.is_complete(rid), 30, "version 1 received by NL and DE")

        # A forgery first: refused at police-nl, whose case stays as it is.
        forged = _forge(settings, codec, rts, rid)
        names = settings.topic_names()

        def refused() -> list[Any]:
            dead = read_topic(settings, names.deadletter, idle=0.3, timeout=5)
            return [d for d in dead if d.value == forged]

        wait_for(lambda: bool(refused()), 30, "the forged withdrawal dead-lettered")
        [letter] = refused()[:1]
        assert header(letter, H_STAGE) == "VERIFY"
        assert "not a trusted key of hl-a" in (header(letter, H_MESSAGE) or "")
        assert (folder / f"{rid}.json").is_file()
        assert rts["police-nl"].inbox.withdrawn_version("hl-a", rid) is None

        (tmp_path / "v2.json").write_text(json.dumps(_fr_only(raw)))
        out = cli(env, "publish", str(tmp_path / "v2.json"), "--as", "hl-a", "--amend")
        assert f"referral {rid} version 2 (amendment)" in out
        wait_for(
            lambda: all(rts[o].inbox.withdrawn_version("hl-a", rid) == 1 for o in ORGS[1:3]),
            30,
            "version 1 withdrawn from police-nl and police-de",
        )
        wait_for(lambda: outbox.is_complete(rid), 30, "version 2 received by FR")
        row = _row(db, rid)
        listed = json.loads(cli(env, "inbox", "police-nl", "--json"))
        trace: dict[str, Any] = {}

        def traced() -> bool:
            trace.update(json.loads(cli(env, "trace", rid, "--json")))
            return len(_withdrawal_hops(trace)) == 6

        wait_for(traced, 30, "the withdrawals in the trace", step=0.5)
        cli(env, "ledger", "sync")
        verified = cli(env, "ledger", "verify")

    # The inbox folder: no current file, version 1 in the history, a withdrawal note.
    assert not (folder / f"{rid}.json").exists()
    assert (
        json.loads((folder / "history" / f"{rid}.v1.json").read_text())["delivery"]["version"] == 1
    )
    note = json.loads((folder / "withdrawn" / f"{rid}.json").read_text())["withdrawal"]
    assert (note["origin_org"], note["withdrawn_version"]) == ("hl-a", 1)
    # The case table: the row is marked withdrawn (version 1).
    assert row is not None
    assert row[:2] == (1, 1)
    assert row[2]
    # The inbox lists the case as withdrawn.
    assert [(e["referral_id"], e["status"], e["withdrawn"]) for e in listed] == [
        (rid, "WITHDRAWN", True)
    ]
    # The ledger: hl-a sent each withdrawal, the router routed it, each recipient took it.
    hops = sorted(_withdrawal_hops(trace))
    assert hops == sorted(
        [("STATUS_SENT", "hl-a", "hl-a", org) for org in ("police-nl", "police-de")]
        + [("STATUS_ROUTED", "router", "hl-a", org) for org in ("police-nl", "police-de")]
        + [("DELIVERED", org, "hl-a", org) for org in ("police-nl", "police-de")]
    )
    assert verified.startswith("ledger intact"), verified


def _withdrawal_hops(trace: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(event, actor, from, to) of the trace's hops about the withdrawal of version 1."""
    return [
        (h["event"], h["actor"], h["from_party"], h["to_party"])
        for h in trace.get("hops", [])
        if h.get("reason") == "WITHDRAWN version 1"
    ]
