"""Must show (issue 26): N synthetic requests between the Nordic SPOCs on a simulated clock.

The test plans every request's fate itself (answered in time or late, never,
refused, clarified, delayed), plays it through the real broker and router minute
by simulated minute with the overdue watcher looking after every minute, and
checks against its own plan, never the code under test: every request past its
limit is flagged within 60 s of it and no other is (0 missed, 0 false alarms);
the Art. 18 tables computed from the signed ledger equal the plan's own count;
no request or answer text is in the bytes of any topic.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition

from broker.config import Settings
from broker.kafka import clients
from broker.ledger.store import LedgerStore
from broker.requests.clock import OverdueWatcher
from broker.requests.codes import HOUR_MS, DelayReason, RefusalGround
from broker.requests.stats import art18
from broker.wire.codec import Codec
from tests.support.requests import NORDIC, SimClock, keyed_example, request_network

T0 = 1_767_600_000_000  # 2026-01-05 08:00 UTC, a whole minute
MINUTE = 60_000
MARK = "zq-secret-"  # in every text the test writes: its bytes must never be on a topic
LIMITS = {
    "urgent-direct": 8 * HOUR_MS,
    "urgent-indirect": 72 * HOUR_MS,
    "non-urgent": 168 * HOUR_MS,
}
FATES = (
    "on_time",
    "late",
    "never",
    "refused",
    "clarified",
    "clarified_never",
    "delayed",
    "delayed_never",
    "answered_paused",  # answered while its clarification is pending: within, by the open pause
    "late_paused",  # asked to clarify after its limit, answered while pending: late
)
COUNTRY = {"police-se": "SE", "police-no": "NO", "police-dk": "DK", "police-fi": "FI"}


@dataclass
class Plan:
    """One request as the test means it to go (times in simulated ms)."""

    sender: str
    receiver: str
    urgency: str
    fate: str
    received: int
    rid: str = ""
    pause: int = 0
    ground: str = ""
    delay_reason: str = ""
    expected: int = 0
    actions: list[tuple[int, str]] = field(default_factory=list)  # (time, step) by receiver

    @property
    def due(self) -> int:
        return self.received + LIMITS[self.urgency] + self.pause

    @property
    def alarm(self) -> int | None:
        """When it must be flagged (None: never)."""
        if self.fate in ("late", "never", "clarified_never", "late_paused"):
            return self.due
        return self.expected if self.fate == "delayed_never" else None


def _secret(what: str) -> str:
    return f"{MARK}{what}-{uuid.uuid4().hex}"


def _plan(n: int, rng: random.Random) -> list[Plan]:
    plans = []
    for i in range(n):
        sender, receiver = rng.sample(NORDIC, 2)
        urgency = ("urgent-direct", "urgent-indirect", "non-urgent")[i % 3]
        plan = Plan(
            sender,
            receiver,
            urgency,
            FATES[rng.randrange(len(FATES))],
            received=T0 + (i % 10) * 7 * MINUTE,
        )
        _fate(plan, rng)
        plans.append(plan)
    return plans


def _minute(ms: int) -> int:
    return ms // MINUTE * MINUTE


def _fate(p: Plan, rng: random.Random) -> None:
    limit = LIMITS[p.urgency]
    if p.fate == "on_time":
        p.actions.append((p.received + _minute(int(limit * rng.uniform(0.05, 0.95))), "answer"))
    elif p.fate == "late":
        p.actions.append((p.due + rng.randint(1, 12) * HOUR_MS, "answer"))
    elif p.fate == "refused":
        p.ground = rng.choice(list(RefusalGround)).value
        p.actions.append((p.received + _minute(limit // 3), "refuse"))
    elif p.fate.startswith("clarified"):
        ask = p.received + HOUR_MS
        give = (ask - T0) // (6 * HOUR_MS) * (6 * HOUR_MS) + T0 + 6 * HOUR_MS  # next 6-h mark
        p.pause = give - ask
        p.actions += [(ask, "ask"), (give, "give")]
        if p.fate == "clarified":
            p.actions.append((p.due - 30 * MINUTE, "answer"))
    elif p.fate == "answered_paused":
        # After the bare limit (late unless the pause still open counts), within with it.
        ask, answer = p.received + HOUR_MS, p.received + limit + 2 * HOUR_MS
        p.pause = answer - ask
        p.actions += [(ask, "ask"), (answer, "answer")]
    elif p.fate == "late_paused":
        p.actions += [(p.due + HOUR_MS, "ask"), (p.due + 3 * HOUR_MS, "answer")]
    elif p.fate.startswith("delayed"):
        p.delay_reason = rng.choice(list(DelayReason)).value
        extra = rng.choice((2, 12, 24)) * HOUR_MS
        p.expected = p.due + extra
        p.actions.append((p.received + _minute(limit // 2), "delay"))
        if p.fate == "delayed":
            p.actions.append((p.due + extra // 2, "answer"))


def _request(p: Plan) -> dict[str, Any]:
    return {
        "urgent": p.urgency != "non-urgent",
        "access": "INDIRECT" if p.urgency == "urgent-indirect" else "DIRECT",
        "purpose": _secret("purpose"),
        "items": [_secret("item"), _secret("item")],
        "handling": "H3",
        "reliability": "B",
        "assessment": "2",
        "language": "sv",
    }


def _step(net: Any, p: Plan, step: str) -> None:
    desk, back = net.desks[p.receiver], net.desks[p.sender]
    if step == "answer":
        desk.answer(
            p.rid,
            {"text": _secret("answer"), "attachments": [{"name": "a.txt", "data": _secret("att")}]},
        )
    elif step == "refuse":
        desk.refuse(p.rid, {"ground": p.ground, "note": _secret("note")})
    elif step == "ask":
        desk.ask_clarification(p.rid, {"question": _secret("question")})
    elif step == "delay":
        desk.delay(p.rid, {"reason": p.delay_reason, "expected_ms": p.expected})
    elif step == "give":
        while back.store.get(p.rid).state != "PAUSED":  # the question arrived long ago
            assert back.receive(expect=1, idle=0.0, timeout=20) > 0, "no question"
        back.give_clarification(p.rid, {"text": _secret("clarification")})


def _simulate(net: Any, plans: list[Plan], clock: SimClock) -> None:
    """Play the plans minute by minute; the watcher looks after every minute."""
    sends: dict[int, list[Plan]] = defaultdict(list)
    steps: dict[int, list[tuple[Plan, str]]] = defaultdict(list)
    for p in plans:
        sends[p.received].append(p)
        for at, step in p.actions:
            steps[at].append((p, step))
    watchers = [OverdueWatcher(d) for d in net.desks.values()]
    end = max(max(p.alarm or 0, *(a for a, _ in p.actions), p.due) for p in plans) + 2 * MINUTE
    for now in range(T0, end + 1, MINUTE):
        clock.now = now
        if now in sends:
            _deliver_requests(net, sends[now])
        givers = Counter(p.receiver for p, s in steps.get(now, ()) if s == "give")
        for p, step in steps.get(now, ()):
            _step(net, p, step)
        for org in givers:
            for d in net.desks.values():
                d.flush()
            desk = net.desks[org]
            given = [p for p, s in steps[now] if s == "give" and p.receiver == org]
            while not all(desk.store.get(p.rid).state == "OPEN" for p in given):
                assert desk.receive(expect=1, idle=0.0, timeout=20) > 0, "no clarification"
        for w in watchers:
            w.check()


def _deliver_requests(net: Any, batch: list[Plan]) -> None:
    for p in batch:
        p.rid = net.desks[p.sender].request(p.receiver, f"case-{uuid.uuid4().hex[:8]}", _request(p))
    for d in net.desks.values():
        d.flush()
    for org, count in Counter(p.receiver for p in batch).items():
        desk = net.desks[org]
        desk.receive(expect=count, idle=0.0)  # (questions for its own requests may come too)
        while not all(desk.store.has_message(p.rid) for p in batch if p.receiver == org):
            assert desk.receive(expect=1, idle=0.0, timeout=20) > 0, "a request did not arrive"
        assert all(
            desk.store.get(p.rid).started_at == p.received for p in batch if p.receiver == org
        )


def _expected_art18(plans: list[Plan]) -> dict[str, dict[str, Any]]:
    """The Art. 18 tables counted from the plan alone."""
    out: dict[str, dict[str, Any]] = {}
    for org, cc in COUNTRY.items():
        sent = Counter(f"{p.urgency}/{COUNTRY[p.receiver]}" for p in plans if p.sender == org)
        mine = [p for p in plans if p.receiver == org]
        received = Counter(f"{p.urgency}/{COUNTRY[p.sender]}" for p in mine)
        within = Counter(
            f"{p.urgency}/{COUNTRY[p.sender]}"
            for p in mine
            if p.fate in ("on_time", "clarified", "answered_paused")
        )
        late = Counter(
            f"{p.urgency}/{COUNTRY[p.sender]}"
            for p in mine
            if p.fate in ("late", "delayed", "late_paused")
        )
        out[cc] = {
            "sent": dict(sent),
            "received": dict(received),
            "answered_within_limit": dict(within),
            "answered_late": dict(late),
            "refusals": dict(Counter(p.ground for p in mine if p.fate == "refused")),
            "deviations": {
                "delayed": dict(Counter(p.delay_reason for p in mine if p.delay_reason)),
                "late": sum(late.values()),
                "overdue": sum(1 for p in mine if p.alarm is not None),
            },
        }
    return out


def _all_topic_bytes(settings: Settings) -> bytes:
    """Values and headers of every record of every topic of this test, read with one consumer."""
    admin = clients.admin_client(settings)
    try:
        mine = [t for t in admin.list_topics() if t.startswith(settings.topic_prefix)]
    finally:
        admin.close()
    consumer = clients.consumer(settings, group_id=None, role="test-scan")
    try:
        tps = [TopicPartition(t, p) for t in mine for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        chunks: list[bytes] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    chunks += [r.value or b"", *(v or b"" for _, v in r.headers or ())]
        assert all(consumer.position(tp) >= ends[tp] for tp in tps), "topics not read to the end"
        return b"".join(chunks)
    finally:
        consumer.close()


def _run(n: int, settings: Settings, tmp_path: Path) -> None:
    network = keyed_example(settings, tmp_path)
    codec = Codec.from_settings(settings)
    clock = SimClock(T0)
    plans = _plan(n, random.Random(2026_977 + n))
    with request_network(settings, network, codec, clock) as net:
        _simulate(net, plans, clock)
        flagged = {
            r.request_id: r.overdue_at
            for d in net.desks.values()
            for r in d.store.rows("of_me")
            if r.overdue_at is not None
        }
        for d in net.desks.values():
            d.flush()
        for d in net.desks.values():
            d.receive(idle=1.0)
        answered = sum(
            1 for d in net.desks.values() for r in d.store.rows("by_me") if r.state == "ANSWERED"
        )
    expected = {p.rid: p.alarm for p in plans if p.alarm is not None}
    missed = set(expected) - set(flagged)
    false_alarms = set(flagged) - set(expected)
    assert (len(missed), len(false_alarms)) == (0, 0)
    for rid, at in flagged.items():
        assert 0 < at - expected[rid] <= MINUTE, rid  # within 60 s of the limit
    assert answered == sum(
        1
        for p in plans
        if p.fate in ("on_time", "late", "clarified", "delayed", "answered_paused", "late_paused")
    )
    with LedgerStore(tmp_path / "ledger.sqlite3") as store:
        store.sync(settings, codec)
        assert store.verify(net.trust, codec=codec, allow_plain=False).intact
        tables = {t.state: t.to_json() for t in art18(store.records(), network, 2026)}
    for cc, want in _expected_art18(plans).items():
        got = {k: v for k, v in tables[cc].items() if k in want}
        assert got == want, cc
    raw = _all_topic_bytes(settings)
    assert len(raw) > n * 500
    assert MARK.encode() not in raw


def test_requests_on_the_clock_small(settings: Settings, tmp_path: Path) -> None:
    _run(120, settings, tmp_path)


@pytest.mark.slow
def test_thousand_requests_on_the_clock(settings: Settings, tmp_path: Path) -> None:
    _run(1000, settings, tmp_path)
