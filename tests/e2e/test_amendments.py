"""Amendments end to end (issue 14): a new version of the same referral, counted once.

A signed network on the embedded broker: ``hl-a`` publishes a referral for NL,
DE and FR, whose police receive it through an inbox folder, a SQLite case table
and a webhook. ``referral publish --amend`` sends a corrected version (another
classification, an added item): each sink shows version 2 as the current one
and keeps version 1; the ledger records AMENDED. Version 2 delivered again, and
version 1 arriving late, are repeats: nothing is delivered twice.
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
from connectors.runtime import ConnectorRuntime
from tests.e2e.test_outcomes import cli, env_for, signed_network, three_items
from tests.support.connectors import ENV, HookServer, codec_for, hook_server, wait_for
from tests.support.kafka import start_router

pytestmark = pytest.mark.slow

RECIPIENTS = ("police-nl", "police-de", "police-fr")
KINDS = {"police-nl": "inbox_folder", "police-de": "sqlite", "police-fr": "webhook"}


@pytest.fixture
def hook() -> Any:
    with hook_server() as server:
        yield server


def three_countries() -> dict[str, Any]:
    """A referral of ``hl-a`` hosted in NL that also concerns DE and FR."""
    raw = three_items("hl-a")
    for item in raw["body"]["items"]:
        item["hosting"] = {"country": "NL", "provider": "Example Hosting"}
    raw["envelope"]["jurisdictions"] = [
        {"country": "NL", "basis": "HOSTING", "derived": False},
        {"country": "DE", "basis": "VICTIM_LOCATION", "derived": False},
        {"country": "FR", "basis": "OFFENDER_LOCATION", "derived": False},
    ]
    return raw


def _versions(db: Path, rid: str) -> tuple[int | None, list[int]]:
    """(the case row's version, the versions kept) in police-de's case table."""
    if not db.exists():
        return None, []
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT version FROM cases WHERE referral_id = ?", (rid,)).fetchone()
        kept = conn.execute(
            "SELECT version FROM cases_versions WHERE referral_id = ? ORDER BY version", (rid,)
        ).fetchall()
    return (row[0] if row else None), [k[0] for k in kept]


def test_an_amendment_reaches_folder_table_and_webhook_as_the_current_version_once(
    settings: Settings, tmp_path: Path, hook: HookServer
) -> None:
    network = signed_network(settings, tmp_path, hook.url, "hl-a", *RECIPIENTS)
    env = env_for(settings, tmp_path)
    codec = codec_for(settings)
    raw = three_countries()
    rid = str(raw["envelope"]["referral_id"])
    state = Path(settings.state_dir) / "orgs"
    folder = state / "police-nl" / "inbox"
    db = state / "police-de" / "cases.sqlite3"
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        rts = {}
        for org in ("hl-a", *RECIPIENTS):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV, republish_after=1)
            stack.callback(rt.stop)
            rts[org] = rt.start()
        outbox = rts["hl-a"].outbox
        (tmp_path / "v1.json").write_text(json.dumps(raw))
        cli(env, "publish", str(tmp_path / "v1.json"), "--as", "hl-a")
        wait_for(lambda: outbox.is_complete(rid), 30, "version 1 received by all three")
        v1 = outbox.get(rid)
        assert v1 is not None

        # Corrected classification and one more item; without --amend it is refused.
        amended = json.loads(json.dumps(raw))
        amended["body"]["classification"]["victim_age_group"] = "PUBESCENT"
        extra = {**amended["body"]["items"][0], "url": amended["body"]["items"][0]["url"] + "x"}
        amended["body"]["items"].append(extra)
        (tmp_path / "v2.json").write_text(json.dumps(amended))
        refused = runner_output(env, "publish", str(tmp_path / "v2.json"), "--as", "hl-a")
        assert "--amend" in refused
        out = cli(env, "publish", str(tmp_path / "v2.json"), "--as", "hl-a", "--amend")
        assert f"referral {rid} version 2 (amendment)" in out
        wait_for(
            lambda: outbox.get(rid).version == 2 and outbox.is_complete(rid),  # type: ignore[union-attr]
            30,
            "version 2 received by all three",
        )
        wait_for(lambda: _versions(db, rid) == (2, [1, 2]), 10, "police-de's case table")

        # Version 2 again (a redelivery) and version 1 late: repeats, nothing delivered.
        before = {o: rts[o].inbox.duplicates for o in RECIPIENTS}
        v2 = outbox.get(rid)
        assert v2 is not None
        producer = clients.producer(settings, role="test-redeliver")
        try:
            for entry in (v2, v1):
                producer.send(
                    settings.topic_names().intake,
                    key=rid.encode(),
                    value=entry.value,
                    headers=entry.headers,
                )
            producer.flush(10)
        finally:
            producer.close(5)
        wait_for(
            lambda: all(rts[o].inbox.duplicates >= before[o] + 2 for o in RECIPIENTS),
            30,
            "both repeats recognised by every recipient",
        )
        posts = [r for r in hook.requests if r["id"] == rid]
        current = json.loads((folder / f"{rid}.json").read_text())
        history = sorted(p.name for p in (folder / "history").iterdir())
        table = _versions(db, rid)
        inbox_versions = {o: rts[o].inbox.version("hl-a", rid, k) for o, k in KINDS.items()}
        trace: dict[str, Any] = {}

        def traced() -> bool:
            trace.update(json.loads(cli(env, "trace", rid, "--json")))
            return len(_delivered(trace)) == 6

        wait_for(traced, 20, "six deliveries in the trace", step=0.5)
        versions = outbox.versions(rid)
        listed = json.loads(cli(env, "inbox", "police-nl", "--json"))

    assert inbox_versions == dict.fromkeys(RECIPIENTS, 2)
    assert [(e["referral_id"], e["version"]) for e in listed] == [(rid, 2)]
    # The inbox folder: the current version in the file, the previous one in history/.
    assert current["referral"]["envelope"]["version"] == 2
    assert current["delivery"]["version"] == 2
    assert current["delivery"]["previous_version"] == 1
    assert len(current["referral"]["body"]["items"]) == 4
    assert history == [f"{rid}.v1.json"]
    old = json.loads((folder / "history" / history[0]).read_text())
    assert old["referral"]["envelope"]["version"] == 1
    assert len(old["referral"]["body"]["items"]) == 3
    # The case table: the row is version 2, both versions kept.
    assert table == (2, [1, 2])
    # The webhook: version 1, then version 2 (with what it replaces), each once.
    assert [(p["body"]["delivery"]["version"], p["status"]) for p in posts] == [(1, 200), (2, 200)]
    assert posts[1]["body"]["delivery"]["previous_version"] == 1
    assert posts[1]["body"]["referral"]["body"]["classification"]["victim_age_group"] == (
        "PUBESCENT"
    )
    assert all(p["signed"] for p in posts)
    # The origin: two versions, the ledger says AMENDED.
    assert versions == [1, 2]
    assert trace["version"] == 2
    amended_hops = [h for h in trace["hops"] if h["event"] == "AMENDED"]
    assert [(h["actor"], h["reason"]) for h in amended_hops] == [("hl-a", "version 2")]
    kinds = list(KINDS.values())
    assert sorted(_delivered(trace)) == sorted([*kinds, *(f"{k} version 2" for k in kinds)])


def _delivered(trace: dict[str, Any]) -> list[str]:
    """The reasons of the recipients' DELIVERED hops (the sink kinds, and the version)."""
    return [
        str(h["reason"])
        for h in trace.get("hops", [])
        if h["event"] == "DELIVERED" and h["actor"] in RECIPIENTS
    ]


def runner_output(env: dict[str, str], *args: str) -> str:
    """Run ``referral ARGS`` expecting a failure; its output."""
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code != 0, result.output
    return result.output


def test_an_amendment_answers_a_refusal(
    settings: Settings, tmp_path: Path, hook: HookServer
) -> None:
    """A case system refuses version 1 for good (HTTP 400); the corrected version 2 is
    delivered, clears the refusal and completes the origin's outbox."""
    network = signed_network(settings, tmp_path, hook.url, "hl-a", "police-fr")
    env = env_for(settings, tmp_path)
    codec = codec_for(settings)
    raw = three_items("hl-a")
    for item in raw["body"]["items"]:
        item["hosting"] = {"country": "FR", "provider": "Example Hosting"}
    raw["envelope"]["jurisdictions"] = [{"country": "FR", "basis": "HOSTING", "derived": False}]
    rid = str(raw["envelope"]["referral_id"])
    hook.refuse.add(rid)
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        rts = {}
        for org in ("hl-a", "police-fr"):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV, republish_after=1)
            stack.callback(rt.stop)
            rts[org] = rt.start()
        outbox, receiver = rts["hl-a"].outbox, rts["police-fr"].inbox
        (tmp_path / "v1.json").write_text(json.dumps(raw))
        cli(env, "publish", str(tmp_path / "v1.json"), "--as", "hl-a")
        wait_for(lambda: [p.referral_id for p in outbox.refused()] == [rid], 30, "the refusal")
        assert receiver.refusal("hl-a", rid) is not None

        hook.refuse.clear()  # the corrected version passes the case system's checks
        raw["body"]["classification"]["legal_status"] = "NATIONAL"
        raw["body"]["classification"]["assessed_under"] = "FR"
        (tmp_path / "v2.json").write_text(json.dumps(raw))
        cli(env, "publish", str(tmp_path / "v2.json"), "--as", "hl-a", "--amend")
        wait_for(lambda: outbox.is_complete(rid) and not outbox.refused(), 30, "version 2 received")
        refusal = receiver.refusal("hl-a", rid)
        version = receiver.version("hl-a", rid, "webhook")

    assert refusal is None
    assert version == 2
    assert [(r["status"], r["body"]["delivery"]["version"]) for r in hook.requests] == [
        (400, 1),
        (200, 2),
    ]
