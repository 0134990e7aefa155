"""The outbox without a broker: the republishing schedule and budget, refusals, the CLI view."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.lifecycle import reason_code
from broker.origin.outbox import Outbox, RepublishSchedule
from cli.main import app
from connectors.runtime import OutboxConfig

RID = "7d1c2a9e-0b1f-4c55-9a7e-1f0e6a4c2b10"
T0 = 1000.0


def _rid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


@pytest.fixture
def box(tmp_path: Path) -> Outbox:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    yield outbox  # type: ignore[misc]
    outbox.close()


# -- the schedule ---------------------------------------------------------------------------------


def test_the_interval_doubles_per_send_up_to_the_cap() -> None:
    schedule = RepublishSchedule(republish_after=10, backoff_max=60)
    assert [schedule.interval(n) for n in range(1, 7)] == [10, 20, 40, 60, 60, 60]
    assert schedule.interval(0) == 10, "a referral never sent waits republish_after"
    assert schedule.interval(10**6) == 60, "no overflow however often it was sent"
    assert schedule.next_send_at(T0, 3) == T0 + 40


def test_the_cap_never_shortens_the_first_wait() -> None:
    schedule = RepublishSchedule(republish_after=300, backoff_max=60)
    assert [schedule.interval(n) for n in (1, 2, 9)] == [300, 300, 300]


def test_the_default_schedule_backs_off_to_hourly() -> None:
    schedule = RepublishSchedule()
    sent_at, t = [], 0.0
    for sends in range(1, 8):
        t = schedule.next_send_at(t, sends)
        sent_at.append(t)
    assert sent_at == [300, 900, 2100, 4500, 8100, 11700, 15300]


def test_a_schedule_without_a_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="max_per_sweep"):
        RepublishSchedule(max_per_sweep=0)


def test_the_outbox_table_configures_the_schedule() -> None:
    config = OutboxConfig.model_validate(
        {"republish_after": 5, "backoff_max": 120, "max_per_sweep": 50}
    )
    assert config.schedule() == RepublishSchedule(5, 120, 50)
    assert OutboxConfig().schedule() == RepublishSchedule(300, 3600, 500)


# -- due: the schedule applied to stored referrals ------------------------------------------------


def test_due_follows_the_schedule_send_after_send(box: Outbox) -> None:
    schedule = RepublishSchedule(republish_after=10, backoff_max=60)
    box.add(RID, "case-1", "referrals.intake", b"abc", [], ["police-nl"], now=T0)
    last, sends = T0, 1
    for _ in range(7):
        at = schedule.next_send_at(last, sends)
        assert box.due(schedule, now=at - 0.01) == [], f"due before {at - T0:.0f}s"
        [entry] = box.due(schedule, now=at)
        assert (entry.referral_id, entry.attempts) == (RID, sends)
        box.mark_sent(RID, now=at)
        last, sends = at, sends + 1
    assert last - T0 == 10 + 20 + 40 + 60 + 60 + 60 + 60


def test_an_unacknowledged_send_does_not_push_the_next_one_back(box: Outbox) -> None:
    box.add(RID, "case-1", "referrals.intake", b"abc", [], ["police-nl"], now=T0)
    schedule = RepublishSchedule(republish_after=10)
    assert box.due(schedule, now=T0 + 10)
    # the send failed: nothing is marked, so the next sweep tries again
    assert box.due(schedule, now=T0 + 11)
    assert box.pending()[0].attempts == 1


def test_each_sweep_sends_at_most_its_budget_most_overdue_first(box: Outbox) -> None:
    for n in range(5):
        box.add(_rid(n), f"case-{n}", "referrals.intake", b"v", [], ["police-nl"], now=T0 + n)
    schedule = RepublishSchedule(republish_after=10, max_per_sweep=2)
    now = T0 + 100
    first = [e.referral_id for e in box.due(schedule, now=now)]
    assert first == [_rid(0), _rid(1)]
    for rid in first:
        box.mark_sent(rid, now=now)
    assert [e.referral_id for e in box.due(schedule, now=now)] == [_rid(2), _rid(3)]
    assert len(box.due(RepublishSchedule(republish_after=10), now=now)) == 3


def test_a_bare_number_is_republish_after(box: Outbox) -> None:
    box.add(RID, "case-1", "referrals.intake", b"abc", [], ["police-nl"], now=T0)
    assert box.due(60, now=T0 + 59) == []
    assert [e.referral_id for e in box.due(60, now=T0 + 60)] == [RID]


# -- refusals -------------------------------------------------------------------------------------


def test_a_refusing_destination_is_no_longer_waited_for(box: Outbox) -> None:
    box.add(RID, "case-1", "referrals.intake", b"abc", [], ["police-nl", "police-de"], now=T0)
    assert box.mark_refused(RID, "police-de", "HTTP_422", now=T0 + 5)
    assert not box.mark_refused(RID, "police-de", "HTTP_400"), "a repeat changes nothing"
    assert not box.mark_refused(RID, "police-fr", "HTTP_400"), "an unexpected org changes nothing"
    [pending] = box.pending()
    assert pending.state == "pending"
    assert pending.waiting_for == ("police-nl",)
    assert [(r.org_id, r.reason) for r in pending.refused_by] == [("police-de", "HTTP_422")]
    assert box.due(10, now=T0 + 10), "police-nl still waits: it is sent again"

    assert box.mark_received(RID, "police-nl", now=T0 + 20)
    assert box.pending() == []
    assert box.is_complete(RID)
    assert box.due(10, now=T0 + 10_000) == [], "nobody waits: never sent again"
    [refused] = box.refused()
    assert refused.state == "refused"
    assert refused.received_by == ("police-nl",)
    assert refused.refused_by[0].refused_at == T0 + 5
    assert refused.to_json(now=T0 + 30)["refused_by"] == [
        {"org_id": "police-de", "reason": "HTTP_422"}
    ]


def test_a_referral_every_destination_refused_is_not_sent_again(box: Outbox) -> None:
    box.add(RID, "case-1", "referrals.intake", b"abc", [], ["police-nl"], now=T0)
    assert box.mark_refused(RID, "police-nl", "HTTP_400", now=T0 + 1)
    assert box.is_complete(RID)
    assert box.pending() == []
    assert [p.referral_id for p in box.refused()] == [RID]
    assert box.due(RepublishSchedule(republish_after=1), now=T0 + 10_000) == []


def test_a_refusal_after_receipt_changes_nothing(box: Outbox) -> None:
    box.add(RID, "case-1", "referrals.intake", b"abc", [], ["police-nl"], now=T0)
    assert box.mark_received(RID, "police-nl")
    assert not box.mark_refused(RID, "police-nl", "HTTP_400")
    assert box.refused() == []


def test_a_receipt_after_a_refusal_counts(box: Outbox) -> None:
    box.add(RID, "case-1", "referrals.intake", b"abc", [], ["police-nl"], now=T0)
    box.mark_refused(RID, "police-nl", "HTTP_409")
    assert box.mark_received(RID, "police-nl"), "delivered after all (a replayed dead letter)"
    assert box.refused() == []
    assert box.is_complete(RID)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("HTTP_422", "HTTP_422"),
        (None, "UNSPECIFIED"),
        ("", "UNSPECIFIED"),
        ("bad code\n\x1b[31m", "bad_code__[31m"),
        ("X" * 100, "X" * 64),
    ],
)
def test_a_refusal_reason_is_stored_as_a_printable_code(raw: str | None, stored: str) -> None:
    assert reason_code(raw) == stored


def test_an_outbox_file_from_before_refusals_opens_and_refuses(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE referrals (referral_id TEXT PRIMARY KEY, case_id TEXT NOT NULL,
                topic TEXT NOT NULL, value BLOB NOT NULL, headers TEXT NOT NULL,
                published_at REAL NOT NULL, last_sent_at REAL NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 1, completed_at REAL);
            CREATE TABLE expected (referral_id TEXT NOT NULL, org_id TEXT NOT NULL,
                received_at REAL, PRIMARY KEY (referral_id, org_id));
            """
        )
        db.execute(
            "INSERT INTO referrals VALUES (?, 'case-1', 'referrals.intake', x'00', '[]', 1, 1, 3,"
            " NULL)",
            (RID,),
        )
        db.execute("INSERT INTO expected VALUES (?, 'police-nl', NULL)", (RID,))
    box = Outbox(path)
    try:
        assert [p.attempts for p in box.pending()] == [3]
        assert box.mark_refused(RID, "police-nl", "HTTP_400")
        assert [p.state for p in box.refused()] == ["refused"]
    finally:
        box.close()


# -- referral outbox ------------------------------------------------------------------------------


def test_referral_outbox_shows_sends_and_refusals(tmp_path: Path) -> None:
    state = tmp_path / "state"
    box = Outbox(state / "orgs" / "hl-nl" / "outbox.sqlite3")
    box.add(_rid(1), "case-1", "referrals.intake", b"v", [], ["police-nl"])
    box.mark_sent(_rid(1))
    box.mark_sent(_rid(1))
    box.add(_rid(2), "case-2", "referrals.intake", b"v", [], ["police-fr"])
    box.mark_refused(_rid(2), "police-fr", "HTTP_[bold]422")
    box.add(_rid(3), "case-3", "referrals.intake", b"v", [], ["police-de"])
    box.mark_received(_rid(3), "police-de")
    box.close()
    env = {"REFERRAL_STATE_DIR": str(state), "COLUMNS": "250"}
    runner = CliRunner()

    res = runner.invoke(app, ["outbox", "hl-nl", "--json"], env=env)
    assert res.exit_code == 0, res.output
    rows = {r["referral_id"]: r for r in json.loads(res.stdout)}
    assert set(rows) == {_rid(1), _rid(2)}, "a received referral is not listed"
    assert (rows[_rid(1)]["state"], rows[_rid(1)]["attempts"]) == ("pending", 3)
    assert rows[_rid(2)]["state"] == "refused"
    assert rows[_rid(2)]["refused_by"] == [{"org_id": "police-fr", "reason": "HTTP_[bold]422"}]

    res = runner.invoke(app, ["outbox", "hl-nl"], env=env)
    assert res.exit_code == 0, res.output
    assert "1 pending, 1 refused" in res.stdout
    line = next(ln for ln in res.stdout.splitlines() if _rid(2) in ln)
    assert "police-fr (HTTP_[bold]422)" in line, "the reason is printed as it is, not as markup"
    line = next(ln for ln in res.stdout.splitlines() if _rid(1) in ln)
    assert line.rstrip(" │").endswith("3"), "sends per referral"
    # At an 80-column terminal: short ids, every line fits, and the refusal still shows.
    res = runner.invoke(app, ["outbox", "hl-nl"], env={**env, "COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert all(len(ln) <= 80 for ln in res.stdout.splitlines()), res.stdout
    line = next(ln for ln in res.stdout.splitlines() if _rid(1)[:8] in ln)
    assert _rid(1) not in line, line
    assert line.rstrip().endswith("3"), line
    assert "police-fr" in res.stdout
    assert "422" in res.stdout
