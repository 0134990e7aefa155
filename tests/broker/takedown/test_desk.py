"""The takedown desk on a simulated clock: 500 items to 20 scripted providers over SMTP."""

from __future__ import annotations

import heapq
import json
import secrets
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from broker.errors import ConfigError, SecurityError
from broker.takedown.desk import TakedownDesk
from broker.takedown.figures import summarise
from broker.takedown.notices import Answer, SmtpSender, parse_notice
from broker.takedown.trail import TrailFact, TrailItem, TrailWriter, fact_of
from tests.support.takedown import (
    DAY,
    HOUR,
    MINUTE,
    T0,
    Inbox,
    SimClock,
    scripted_providers,
    smtp_port,
    start_smtp,
    synthetic_id,
)

SECRET = b"test-secret-not-for-production"
ITEMS = 500


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    controller, inbox = start_smtp()
    try:
        yield smtp_port(controller), inbox
    finally:
        controller.stop()


def _facts(events: list[dict[str, Any]]) -> list[TrailFact]:
    out = []
    for e in events:
        fact = fact_of(
            e["event_id"], e["referral_id"], e["actor"], e["to_party"], e["reason"], e["at"]
        )
        assert fact is not None
        out.append(fact)
    return out


def _run(port: int, inbox: Inbox) -> dict[str, Any]:
    """Drive the desk minute by minute; the scripted providers answer what they are sent."""
    directory, scripts = scripted_providers()
    clock = SimClock()
    events: list[dict[str, Any]] = []
    trail = TrailWriter(events.append, "hl-a", clock)
    sender = SmtpSender("127.0.0.1", port, secret=SECRET, answer_base="https://desk.hl-a.invalid")
    desk = TakedownDesk(
        trail, directory, sender, secret=SECRET, sender_address="desk@hl-a.invalid", notifier="hl-a"
    )
    items, police_at, opened_at, urls = {}, {}, {}, {}
    for k in range(ITEMS):
        provider = f"host-{k % 20:02d}"
        item = TrailItem(
            synthetic_id(f"ref-{k // 5}"),
            f"case-{k // 5}",
            synthetic_id(f"item-{k}"),
            provider,
            directory.get(provider).country,
        )
        items[item.item_id] = item
        opened_at[item.item_id] = T0 + (k // 20) * 7 * MINUTE
        police_at[item.item_id] = opened_at[item.item_id] + (k % 3) * 10 * MINUTE
        urls[item.item_id] = f"https://files-{k}.example.org/{secrets.token_hex(8)}"
    plan: list[tuple[int, str, str]] = []  # (when due, item, what)
    for item_id in items:
        plan.append((opened_at[item_id], item_id, "open"))
        plan.append((police_at[item_id], item_id, "police"))
    heapq.heapify(plan)
    mails: list[tuple[int, Any]] = []
    raws: list[bytes] = []
    expected_removed: dict[str, int] = {}
    end = max(police_at.values()) + 80 * HOUR
    while clock.now <= end:
        while plan and plan[0][0] <= clock.now:
            _, item_id, what = heapq.heappop(plan)
            if what == "open":
                desk.open(items[item_id], urls[item_id], at_ms=clock.now)
            elif what == "police":
                desk.police_informed(item_id, "police-nl")
            elif what.startswith("link:"):
                desk.answer_link(what[5:])
            else:  # "api:<removed at>"
                desk.answer(item_id, Answer.REMOVED, at_ms=int(what[4:]))
        desk.tick()
        for raw in inbox.take():
            raws.append(raw)
            notice = parse_notice(raw)
            mails.append((clock.now, notice))
            script = scripts[notice.provider_id]
            if notice.kind != "notice" or notice.repeat or script.removes_after_ms is None:
                continue
            for item_id in notice.items:
                removed = clock.now + script.removes_after_ms
                expected_removed[item_id] = removed
                if script.kind == "fast":
                    token = notice.tokens[(item_id, "removed")]
                    heapq.heappush(plan, (removed, item_id, f"link:{token}"))
                else:
                    heapq.heappush(
                        plan, (removed + script.reports_after_ms, item_id, f"api:{removed}")
                    )
        clock.now += MINUTE
    return {
        "events": events,
        "mails": mails,
        "raws": raws,
        "items": items,
        "police_at": police_at,
        "opened_at": opened_at,
        "urls": urls,
        "scripts": scripts,
        "expected": expected_removed,
    }


@pytest.fixture(scope="module")
def run() -> Iterator[dict[str, Any]]:
    controller, inbox = start_smtp()
    try:
        yield _run(smtp_port(controller), inbox)
    finally:
        controller.stop()


def _steps(run: dict[str, Any]) -> dict[str, list[TrailFact]]:
    by_item: dict[str, list[TrailFact]] = defaultdict(list)
    for f in _facts(run["events"]):
        by_item[f.item_id].append(f)
    return by_item


def test_every_item_is_notified_within_a_minute_of_its_clearance(run: dict[str, Any]) -> None:
    by_item = _steps(run)
    assert len(by_item) == ITEMS
    for item_id, facts in by_item.items():
        first = [f for f in facts if f.step == "NOTICE_SENT"]
        assert len(first) == 1, item_id
        assert 0 <= first[0].at_ms - run["police_at"][item_id] <= MINUTE
    # the mails say the same: each item in exactly one first notice, each mail one provider's
    firsts = Counter(
        i for _, n in run["mails"] if n.kind == "notice" and n.repeat == 0 for i in n.items
    )
    assert set(firsts.values()) == {1}
    assert len(firsts) == ITEMS
    for _, notice in run["mails"]:
        assert {run["items"][i].provider for i in notice.items} == {notice.provider_id}
        assert notice.to.endswith(f"@{notice.provider_id}.invalid")
        assert all(run["urls"][i] == url for i, url in notice.items.items())


def test_answered_items_carry_the_providers_time(run: dict[str, Any]) -> None:
    by_item = _steps(run)
    assert len(run["expected"]) == 14 * 25
    for item_id, removed_at in run["expected"].items():
        removed = [f for f in by_item[item_id] if f.step == "REMOVED"]
        assert [f.at_ms for f in removed] == [removed_at]
        answered = [f for f in by_item[item_id] if f.step == "PROVIDER_ANSWERED"]
        assert len(answered) == 1
        assert answered[0].at_ms >= removed_at


def test_silent_providers_get_repeats_at_24_and_48_h_and_an_escalation_at_72_h(
    run: dict[str, Any],
) -> None:
    by_item = _steps(run)
    for item_id, item in run["items"].items():
        kind = run["scripts"][item.provider].kind
        facts = by_item[item_id]
        first = next(f.at_ms for f in facts if f.step == "NOTICE_SENT")
        repeats = [(f.n, f.at_ms - first) for f in facts if f.step == "NOTICE_REPEATED"]
        escalations = [f.at_ms - first for f in facts if f.step == "ESCALATED"]
        if kind == "silent":
            assert repeats == [(1, DAY), (2, 2 * DAY)], item_id
            assert escalations == [3 * DAY], item_id
        elif kind == "slow":  # removed after 30 h: one repeat, no escalation
            assert repeats == [(1, DAY)]
            assert escalations == []
        else:
            assert repeats == []
            assert escalations == []
    # escalation notices went to the upstream contact: each silent provider's item once
    escalated = [n for _, n in run["mails"] if n.kind == "escalation"]
    assert {n.provider_id for n in escalated} == {f"host-{i}" for i in range(14, 20)}
    assert all(n.to == f"upstream@{n.provider_id}.invalid" for n in escalated)
    counted = Counter(i for n in escalated for i in n.items)
    assert len(counted) == 6 * 25
    assert set(counted.values()) == {1}


def test_no_item_is_notified_twice_within_one_cadence_step(run: dict[str, Any]) -> None:
    per_step = Counter((i, n.repeat, n.kind) for _, n in run["mails"] for i in n.items)
    assert set(per_step.values()) == {1}
    ids = [e["event_id"] for e in run["events"]]
    assert len(ids) == len(set(ids))


def test_median_time_to_removal_per_provider_matches_the_script(run: dict[str, Any]) -> None:
    figures = summarise(_facts(run["events"]))
    for provider, script in run["scripts"].items():
        mine = [i for i, item in run["items"].items() if item.provider == provider]
        row = figures["by_provider"][provider]
        assert row["items"] == 25
        if script.removes_after_ms is None:
            assert row["removed"] == 0
            assert row["median_hours"] is None
            assert row["escalated"] == 25
            continue
        # the script's own arithmetic: cleared at police time, removed `removes_after` later
        times = [run["police_at"][i] + script.removes_after_ms - run["opened_at"][i] for i in mine]
        assert row["median_hours"] == round(statistics.median(times) / HOUR, 2), provider


def test_a_notice_carries_no_more_than_the_provider_must_see(run: dict[str, Any]) -> None:
    # locations and item ids, never the case, the referral, the police or another provider
    for raw, (_, notice) in zip(run["raws"], run["mails"], strict=True):
        text = raw.decode()
        assert "case-" not in text
        assert "police" not in text
        assert not any(item.referral_id in text for item in run["items"].values())
        others = {i.provider for i in run["items"].values()} - {notice.provider_id}
        assert not any(f"{p}." in text or f"{p}\n" in text for p in others)
        assert "Art. 16" in text
        assert "good faith" in text


def test_the_trail_names_ids_only(run: dict[str, Any]) -> None:
    text = json.dumps(run["events"])
    assert "example.org" not in text
    assert "http" not in text
    assert "files-" not in text


def test_a_forged_answer_link_is_refused(smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    directory, _ = scripted_providers()
    clock = SimClock()
    events: list[dict[str, Any]] = []
    desk = TakedownDesk(
        TrailWriter(events.append, "hl-a", clock),
        directory,
        SmtpSender("127.0.0.1", port, secret=SECRET, answer_base="https://desk.invalid"),
        secret=SECRET,
        sender_address="desk@hl-a.invalid",
        notifier="hl-a",
    )
    item = TrailItem(synthetic_id("r"), "case-1", synthetic_id("i"), "host-00", "NL")
    desk.open(item, "https://a.example.org/x")
    desk.police_informed(item.item_id, "police-nl")
    desk.tick()
    notice = parse_notice(inbox.take()[0])
    token = notice.tokens[(item.item_id, "removed")]
    with pytest.raises(SecurityError):
        desk.answer_link(token[:-1] + ("0" if token[-1] != "0" else "1"))
    with pytest.raises(SecurityError):
        desk.answer_link(token.replace(".removed.", ".not_illegal."))
    assert desk.pending() == 1
    with pytest.raises(ConfigError, match="no hosting provider"):
        desk.open(TrailItem(synthetic_id("r"), "c", synthetic_id("j"), "host-99", "NL"), "x")
