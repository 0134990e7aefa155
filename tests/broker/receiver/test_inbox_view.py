"""``referral inbox`` over a seeded inbox store, short ids, and the SQLite case table's times.

No broker: the inbox store is seeded as the sinks would fill it.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.contracts import Delivery
from broker.errors import ConfigError
from broker.ids import resolve_id
from broker.receiver.inbox import Inbox
from cli.main import app
from connectors.sqlite_sink import SqliteCaseConfig, SqliteCaseSink

NETWORK = Path(__file__).resolve().parents[3] / "examples" / "network.toml"
ORG = "police-nl"
HOUR = 3600.0


def _delivery(
    rid: str, case: str, *, priority: str = "NORMAL", refs: tuple[str, ...] = ()
) -> Delivery:
    doc = {
        "envelope": {
            "referral_id": rid,
            "case_id": case,
            "priority": priority,
            "external_refs": [{"system": s, "id": i} for s, i in (r.split(":") for r in refs)],
        }
    }
    topic = "referrals.to.NL.urgent" if priority == "URGENT" else "referrals.to.NL"
    return Delivery(rid, case, "hl-se", b"\x00", doc, topic, 0, 1)


def _rid(prefix: str) -> str:
    return prefix + str(uuid.uuid4())[len(prefix) :]


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A state dir whose police-nl inbox holds five referrals of various ages and states."""
    now = time.time()
    ids = {
        "old_normal": _rid("aaaa1111"),  # 10 days old, unanswered: overdue (7 days)
        "old_answered": _rid("aaaa2222"),  # 10 days old, ACCEPTED: not overdue
        "urgent_late": _rid("bbbb1111"),  # urgent, 4 days old: overdue (3 days)
        "urgent_new": _rid("cccc1111"),  # urgent, 1 hour old
        "new_normal": _rid("dddd1111"),  # 2 hours old, has an ICCAM reference
    }
    inbox = Inbox(tmp_path / "orgs" / ORG / "inbox.sqlite3")
    inbox.record(_delivery(ids["old_normal"], "case-old"), "inbox_folder", now - 240 * HOUR)
    inbox.record(_delivery(ids["old_answered"], "case-done"), "inbox_folder", now - 240 * HOUR)
    inbox.record_sent_status("hl-se", ids["old_answered"], "ACCEPTED", now - 200 * HOUR)
    inbox.record(
        _delivery(ids["urgent_late"], "case-u1", priority="URGENT"), "inbox_folder", now - 96 * HOUR
    )
    inbox.record(
        _delivery(ids["urgent_new"], "case-u2", priority="URGENT"), "inbox_folder", now - HOUR
    )
    inbox.record(
        _delivery(ids["new_normal"], "case-new", refs=("ICCAM:98765",)), "sqlite", now - 2 * HOUR
    )
    inbox.close()
    return tmp_path, ids


def _run(state: Path, *args: str, columns: int = 200) -> tuple[int, str]:
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["--network", str(NETWORK), "--state-dir", str(state), *args],
        env={"COLUMNS": str(columns), "TERM": "dumb"},
    )
    return result.exit_code, result.stdout


def _json(state: Path, *args: str) -> list[dict[str, object]]:
    code, out = _run(state, "inbox", ORG, "--json", *args)
    assert code == 0, out
    data = json.loads(out)
    assert isinstance(data, list)
    return data


def test_urgent_first_then_overdue_then_newest(seeded: tuple[Path, dict[str, str]]) -> None:
    state, ids = seeded
    order = [e["referral_id"] for e in _json(state)]
    assert order == [
        ids["urgent_late"],
        ids["urgent_new"],
        ids["old_normal"],
        ids["new_normal"],
        ids["old_answered"],
    ]


def test_overdue_and_unacknowledged(seeded: tuple[Path, dict[str, str]]) -> None:
    state, ids = seeded
    overdue = {e["referral_id"] for e in _json(state, "--overdue")}
    assert overdue == {ids["urgent_late"], ids["old_normal"]}
    unanswered = {e["referral_id"] for e in _json(state, "--unacknowledged")}
    assert ids["old_answered"] not in unanswered
    assert len(unanswered) == 4
    answered = next(e for e in _json(state) if e["referral_id"] == ids["old_answered"])
    assert answered["status"] == "ACCEPTED"
    assert answered["acknowledged"] is True


def test_new_since_duration_and_iso_date(seeded: tuple[Path, dict[str, str]]) -> None:
    state, ids = seeded
    assert {e["referral_id"] for e in _json(state, "--since", "24h")} == {
        ids["urgent_new"],
        ids["new_normal"],
    }
    five_days_ago = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 5 * 86400))
    assert len(_json(state, "--since", five_days_ago)) == 3
    code, _ = _run(state, "inbox", ORG, "--since", "yesterday")
    assert code == 2


def test_search_by_case_id_external_ref_and_prefix(seeded: tuple[Path, dict[str, str]]) -> None:
    state, ids = seeded
    assert [e["referral_id"] for e in _json(state, "--search", "case-u1")] == [ids["urgent_late"]]
    assert [e["referral_id"] for e in _json(state, "--search", "ICCAM:98765")] == [
        ids["new_normal"]
    ]
    assert [e["referral_id"] for e in _json(state, "--search", "98765")] == [ids["new_normal"]]
    assert [e["referral_id"] for e in _json(state, "--search", "cccc1111")] == [ids["urgent_new"]]
    assert len(_json(state, "--search", "aaaa")) == 2, "a prefix may list several"


def test_json_and_csv_exports_are_valid(seeded: tuple[Path, dict[str, str]]) -> None:
    state, ids = seeded
    data = _json(state)
    assert all(str(e["received_at"]).endswith("Z") for e in data)
    code, out = _run(state, "inbox", ORG, "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["referral_id"] for r in rows] == [e["referral_id"] for e in data]
    new = next(r for r in rows if r["referral_id"] == ids["new_normal"])
    assert new["external_refs"] == "ICCAM:98765"
    assert new["urgent"] == "false"


def test_table_fits_80_columns_and_wide_shows_whole_ids(
    seeded: tuple[Path, dict[str, str]],
) -> None:
    state, ids = seeded
    code, out = _run(state, "inbox", ORG, columns=80)
    assert code == 0, out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert ids["urgent_late"][:8] in out
    assert ids["urgent_late"] not in out
    assert "case-u1" in out
    assert "RECEIVED" in out
    assert "ACCEPTED" in out
    code, out = _run(state, "inbox", ORG, "--wide", columns=200)
    assert ids["urgent_late"] in out
    assert "ICCAM:98765" in out


def test_short_ids_resolve_once_and_refuse_ambiguity() -> None:
    pool = ["aaaa1111-x", "aaaa2222-y", "bbbb1111-z"]
    assert resolve_id("bbbb", pool) == "bbbb1111-z"
    assert resolve_id("aaaa1111-x", pool) == "aaaa1111-x"
    assert resolve_id("ffff0000", pool) == "ffff0000", "unknown ids pass through to be reported"
    with pytest.raises(ConfigError, match="ambiguous"):
        resolve_id("aaaa", pool)
    with pytest.raises(ConfigError, match="too short"):
        resolve_id("bb", pool)


def test_status_takes_a_short_id(seeded: tuple[Path, dict[str, str]]) -> None:
    state, ids = seeded
    runner = CliRunner()
    base = ["--network", str(NETWORK), "--state-dir", str(state), "status", ORG]
    # An ambiguous prefix is refused before anything is sent (no broker needed).
    result = runner.invoke(app, [*base, "aaaa", "ACCEPTED"])
    assert result.exit_code == 2
    assert "ambiguous" in result.output
    # A unique prefix is resolved; ACCEPTED after ACCEPTED is refused by the lifecycle,
    # which proves the whole id was found in the inbox.
    result = runner.invoke(app, [*base, ids["old_answered"][:8], "ACCEPTED"])
    assert result.exit_code != 0
    assert "refused after ACCEPTED" in result.output


def test_case_table_times_are_sql_dates_and_old_tables_migrate(tmp_path: Path) -> None:
    db_path = tmp_path / "cases.sqlite3"
    with sqlite3.connect(db_path) as db:  # a table of the previous version: epoch numbers
        db.execute(
            "CREATE TABLE cases (referral_id TEXT NOT NULL, case_id TEXT NOT NULL,"
            " origin_org TEXT NOT NULL, priority TEXT NOT NULL, tlp TEXT NOT NULL,"
            " jurisdictions TEXT NOT NULL, referral TEXT NOT NULL, topic TEXT NOT NULL,"
            " received_at REAL NOT NULL, updated_at REAL NOT NULL,"
            " PRIMARY KEY (origin_org, referral_id))"
        )
        old = time.time() - 3 * 86400
        db.execute(
            "INSERT INTO cases VALUES ('r-old', 'c', 'hl-se', 'NORMAL', 'AMBER', '[]', '{}',"
            " 't', ?, ?)",
            (old, old),
        )
    sink = SqliteCaseSink(SqliteCaseConfig(path=str(db_path)), Settings(state_dir=tmp_path))
    sink.open()
    sink.deliver(_delivery(str(uuid.uuid4()), "case-new"))
    sink.close()
    with sqlite3.connect(db_path) as db:
        recent = db.execute(
            "SELECT case_id FROM cases WHERE received_at > datetime('now', '-1 day')"
        ).fetchall()
        older = db.execute(
            "SELECT referral_id, typeof(received_at), received_at FROM cases"
            " WHERE received_at <= datetime('now', '-1 day')"
        ).fetchall()
    assert recent == [("case-new",)]
    assert older[0][:2] == ("r-old", "text")
    assert older[0][2] == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(old))
