"""Erasing an amended referral asks the recipients an amendment dropped too (issue 27).

A signed network on the embedded broker: hl-a refers a case to police-nl (inbox
folder) and police-de (case table), then amends it to police-fr (webhook) only;
police-nl and police-de get the withdrawal and keep what they received. ``referral
erase`` asks all three, not only the current version's recipient; each erases (the
withdrawn copies too) and answers ERASED, which hl-a accepts from the dropped ones
although the current version no longer routes to them; then hl-a erases its own.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.origin.erase_request import ErasureBook
from tests.e2e.test_outcomes import cli, env_for, signed_network
from tests.e2e.test_withdrawals import ORGS, _fr_only, _nl_and_de
from tests.support.connectors import ENV, HookServer, codec_for, hook_server, wait_for
from tests.support.kafka import start_network

pytestmark = pytest.mark.slow

DROPPED = ("police-nl", "police-de")


@pytest.fixture
def hook() -> Any:
    with hook_server() as server:
        yield server


def _answered(settings: Settings, rid: str) -> set[str]:
    book = ErasureBook.for_org(settings, "hl-a")
    try:
        return {s.recipient for s in book.states(rid) if s.answered_at is not None}
    finally:
        book.close()


def test_erasing_an_amended_referral_reaches_the_recipients_the_amendment_dropped(
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
        (tmp_path / "v2.json").write_text(json.dumps(_fr_only(raw)))
        cli(env, "publish", str(tmp_path / "v2.json"), "--as", "hl-a", "--amend")
        wait_for(
            lambda: all(rts[o].inbox.withdrawn_version("hl-a", rid) == 1 for o in DROPPED),
            30,
            "version 1 withdrawn from police-nl and police-de",
        )
        wait_for(lambda: outbox.is_complete(rid), 30, "version 2 received by FR")
        assert (folder / "history" / f"{rid}.v1.json").is_file()
        assert (folder / "withdrawn" / f"{rid}.json").is_file()

        rows = json.loads(cli(env, "erase", rid, "--as", "hl-a", "--reason", "INCORRECT", "--json"))
        assert rows == [
            {"referral_id": rid, "asked": ["police-fr", "police-nl", "police-de"], "not_sent": []}
        ]
        wait_for(
            lambda: _answered(settings, rid) == {"police-fr", *DROPPED},
            60,
            "ERASED from the current and the dropped recipients",
        )
        wait_for(lambda: outbox.get(rid) is None, 30, "hl-a erased its own copies")
        for org in DROPPED:
            assert rts[org].inbox.state("hl-a", rid).erased
            assert rts[org].inbox.withdrawn_version("hl-a", rid) is None
        posts = [r for r in hook.requests if r["id"] == rid and "erase" in r["body"]]
        assert [p["status"] for p in posts] == [200]
    assert not list(folder.rglob(f"{rid}*"))
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        held = sum(
            conn.execute(f"SELECT COUNT(*) FROM {t} WHERE referral_id = ?", (rid,)).fetchone()[0]
            for t in tables
            if "referral_id" in [c[1] for c in conn.execute(f"PRAGMA table_info({t})")]
        )
    assert held == 0
