"""``referral inbox ORG --overdue`` also lists the police requests ORG owes past their limit.

No broker: the inbox reads the SPOC's own request store (what its desk received).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from broker.requests.codes import DAY_MS, HOUR_MS, MessageKind
from broker.requests.store import RequestStore
from cli.main import app

ROOT = Path(__file__).resolve().parents[2]
ME, THEM = "police-se", "police-fi"
runner = CliRunner()


def _msg(kind: MessageKind, rid: str, *, incoming: bool) -> dict[str, Any]:
    return {
        "message_id": rid if kind is MessageKind.REQUEST else str(uuid.uuid4()),
        "request_id": rid,
        "case_id": f"case-{rid[:6]}",
        "referral_id": None,
        "kind": kind.value,
        "from_org": THEM if incoming else ME,
        "to_org": ME if incoming else THEM,
    }


def _request(store: RequestStore, at: int, *, urgent: bool, incoming: bool = True) -> str:
    rid = str(uuid.uuid4())
    content = {"urgent": urgent, "access": "DIRECT", "purpose": "p", "items": ["i"]}
    store.record(_msg(MessageKind.REQUEST, rid, incoming=incoming), content, me=ME, at=at)
    return rid


def test_inbox_overdue_lists_only_the_open_requests_owed_past_their_limit(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    store = RequestStore(tmp_path / "orgs" / ME / "requests.sqlite3")
    try:
        overdue = _request(store, now - 9 * HOUR_MS, urgent=True)
        paused, answered, delayed = (_request(store, now - 9 * HOUR_MS, urgent=True) for _ in "abc")
        store.record(
            _msg(MessageKind.CLARIFICATION_ASKED, paused, incoming=False),
            {},
            me=ME,
            at=now - 7 * HOUR_MS,
        )
        store.record(
            _msg(MessageKind.ANSWER, answered, incoming=False), {}, me=ME, at=now - HOUR_MS
        )
        until = {"reason": "VOLUME", "expected_ms": now + DAY_MS}
        store.record(
            _msg(MessageKind.DELAY, delayed, incoming=False), until, me=ME, at=now - 7 * HOUR_MS
        )
        not_yet = _request(store, now - DAY_MS, urgent=False)
        theirs = _request(store, now - 9 * HOUR_MS, urgent=True, incoming=False)  # owed to me
    finally:
        store.close()
    env = {
        "REFERRAL_STATE_DIR": str(tmp_path),
        "REFERRAL_NETWORK_FILE": str(ROOT / "examples" / "network.toml"),
        "COLUMNS": "200",
    }
    result = runner.invoke(app, ["inbox", ME, "--overdue"], env=env)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{ME}: 1 police request(s) owed past their limit\n" in out
    for shown in (overdue[:8], THEM, "urgent direct"):
        assert shown in out
    for rid in (paused, answered, delayed, not_yet, theirs):
        assert rid[:8] not in out
    result = runner.invoke(app, ["inbox", ME], env=env)
    assert result.exit_code == 0, result.output
    assert (
        f"1 police request(s) owed past their limit (referral inbox {ME} --overdue" in result.output
    )
    assert overdue[:8] not in result.output
