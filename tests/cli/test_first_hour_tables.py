"""The liaison's first hour at 80 columns: HIGH marked and sorted, searches by part, ``--wide``.

No broker: the inbox and ledger stores are seeded as the sinks and the ledger
sync would fill them. CliRunner's output is not a terminal (as ``| cat``).
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

from typer.testing import CliRunner

from broker.contracts import Delivery
from broker.receiver.inbox import Inbox
from broker.wire.models import ReferralStatus
from cli.main import app
from tests.cli.test_tables import _seed

NETWORK = Path(__file__).resolve().parents[2] / "examples" / "network.toml"
ORG = "police-nl"


def _delivery(rid: str, case: str, priority: str, ref: str) -> Delivery:
    system, ident = ref.split(":")
    doc = {
        "envelope": {
            "referral_id": rid,
            "case_id": case,
            "priority": priority,
            "external_refs": [{"system": system, "id": ident}],
        }
    }
    topic = "referrals.to.NL.urgent" if priority == "URGENT" else "referrals.to.NL"
    return Delivery(rid, case, "hl-se", b"\x00", doc, topic, 0, 1)


def _inbox(state: Path) -> dict[str, str]:
    """NORMAL newest, HIGH older, URGENT oldest."""
    now = time.time()
    ids = {p: str(uuid.uuid4()) for p in ("NORMAL", "HIGH", "URGENT")}
    inbox = Inbox(state / "orgs" / ORG / "inbox.sqlite3")
    for age, (priority, rid) in enumerate(ids.items()):
        case = f"case-{priority.lower()}-{rid[:6]}"
        ref = f"ICCAM:iccam-{priority.lower()}-4711"
        inbox.record(_delivery(rid, case, priority, ref), "inbox_folder", now - 60 * (age + 1))
    inbox.close()
    return ids


def _run(state: Path, *args: str, columns: int = 80) -> str:
    result = CliRunner().invoke(
        app,
        ["--network", str(NETWORK), "--state-dir", str(state), *args],
        env={"COLUMNS": str(columns), "TERM": "dumb"},
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_high_priority_is_sorted_after_urgent_and_marked(tmp_path: Path) -> None:
    ids = _inbox(tmp_path)
    out = _run(tmp_path, "inbox", ORG)
    rows = [line for line in out.splitlines() if re.match(r"^[0-9a-f]{8} ", line)]
    assert [r[:8] for r in rows] == [ids[p][:8] for p in ("URGENT", "HIGH", "NORMAL")]
    assert re.match(r"^\S{8}\s+H\s", rows[1]), rows[1]
    assert re.match(r"^\S{8}\s+U\s", rows[0]), rows[0]
    assert "H = high priority" in out


def test_search_finds_part_of_a_case_id_or_an_external_reference(tmp_path: Path) -> None:
    ids = _inbox(tmp_path)
    assert ids["HIGH"] in _run(tmp_path, "inbox", ORG, "--json", "--search", "case-hi")
    by_ref = _run(tmp_path, "inbox", ORG, "--json", "--search", "iccam-high")
    assert ids["HIGH"] in by_ref
    assert ids["NORMAL"] not in by_ref
    assert _run(tmp_path, "inbox", ORG, "--json", "--search", "4711").count("referral_id") == 3
    by_prefix = _run(tmp_path, "inbox", ORG, "--json", "--search", ids["URGENT"][:6])
    assert ids["URGENT"] in by_prefix


def test_wide_at_80_columns_piped_keeps_whole_ids(tmp_path: Path) -> None:
    ids = _inbox(tmp_path)
    out = _run(tmp_path, "inbox", ORG, "--wide")
    for rid in ids.values():
        assert rid in out, "a whole id on one line"
    assert "ICCAM:iccam-urgent-4711" in out
    assert "…" not in out


def test_wide_trace_and_ledger_at_80_columns_keep_whole_values(tmp_path: Path) -> None:
    rid = _seed(tmp_path)
    reason = "jurisdiction DE (HOSTING) for the police of the hosting country"
    trace = _run(tmp_path, "trace", rid[:8], "--no-sync", "--wide")
    ledger = _run(tmp_path, "ledger", "show", "--wide")
    for out in (trace, ledger):
        assert rid in out
        assert reason in out, "the reason whole, on one line"
        assert "…" not in out
        for event in ("PUBLISHED", "ROUTED", "DELIVERED"):
            assert re.search(rf"\b{event}\b", out), event


def test_status_help_at_80_columns_never_cuts_a_status(tmp_path: Path) -> None:
    out = _run(tmp_path, "status", "--help")
    words = set(re.findall(r"[A-Z_]+", out))
    for status in ReferralStatus:
        assert status.value in words, status
    for outcome in ("REMOVED", "STILL_ONLINE", "NOT_FOUND", "NOT_ILLEGAL"):
        assert outcome in words, outcome
    assert "…" not in out
