"""The clocks of police requests: limits from receipt, pauses, delays, the overdue watcher."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.ledger.events import decode_events
from broker.metrics import setup_metrics
from broker.requests.clock import OverdueWatcher
from broker.requests.codes import DAY_MS, HOUR_MS, MessageKind
from broker.requests.store import RequestStore
from broker.wire.codec import Codec
from tests.broker.test_metrics import scrape, value
from tests.support.connectors import wait_for
from tests.support.kafka import read_topic
from tests.support.requests import SimClock, keyed_example, request_network

T0 = 1_767_600_000_000
ME, THEM = "police-no", "police-se"


def _msg(kind: MessageKind, request_id: str, *, outgoing: bool) -> dict[str, Any]:
    return {
        "message_id": request_id if kind is MessageKind.REQUEST else str(uuid.uuid4()),
        "request_id": request_id,
        "case_id": "case-1",
        "referral_id": None,
        "kind": kind.value,
        "from_org": ME if outgoing else THEM,
        "to_org": THEM if outgoing else ME,
    }


def _received(store: RequestStore, urgent: bool, access: str) -> str:
    rid = str(uuid.uuid4())
    content = {"urgent": urgent, "access": access, "purpose": "p", "items": ["i"]}
    store.record(_msg(MessageKind.REQUEST, rid, outgoing=False), content, me=ME, at=T0)
    return rid


@pytest.mark.parametrize(
    ("urgent", "access", "limit"),
    [(True, "DIRECT", 8 * HOUR_MS), (True, "INDIRECT", 3 * DAY_MS), (False, "DIRECT", 7 * DAY_MS)],
)
def test_limit_runs_from_receipt_and_flags_once_just_after_it(
    tmp_path: Path, urgent: bool, access: str, limit: int
) -> None:
    store = RequestStore(tmp_path / "r.sqlite3")
    rid = _received(store, urgent, access)
    assert store.flag_overdue(T0 + limit) == []
    assert [r.request_id for r in store.flag_overdue(T0 + limit + 1)] == [rid]
    assert store.flag_overdue(T0 + limit + 60_000) == []
    assert [r.request_id for r in store.rows("of_me", overdue=True)] == [rid]


def test_clarification_pauses_the_clock_and_a_delay_moves_the_alarm(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "r.sqlite3")
    paused, delayed, answered = (_received(store, True, "DIRECT") for _ in range(3))
    store.record(
        _msg(MessageKind.CLARIFICATION_ASKED, paused, outgoing=True),
        {"question": "q"},
        me=ME,
        at=T0 + HOUR_MS,
    )
    until = T0 + 2 * DAY_MS
    store.record(
        _msg(MessageKind.DELAY, delayed, outgoing=True),
        {"reason": "JUDICIAL_AUTHORISATION", "expected_ms": until},
        me=ME,
        at=T0 + HOUR_MS,
    )
    store.record(
        _msg(MessageKind.ANSWER, answered, outgoing=True), {"text": "a"}, me=ME, at=T0 + 7 * HOUR_MS
    )
    assert store.flag_overdue(T0 + DAY_MS) == []  # paused, delayed, answered: none overdue
    store.record(
        _msg(MessageKind.CLARIFICATION_GIVEN, paused, outgoing=False),
        {"text": "c"},
        me=ME,
        at=T0 + 5 * HOUR_MS,
    )
    row = store.get(paused)
    assert (row.state, row.due_at) == ("OPEN", T0 + 12 * HOUR_MS)  # 8 h + 4 h paused
    assert store.flag_overdue(T0 + 12 * HOUR_MS) == []
    assert [r.request_id for r in store.flag_overdue(T0 + 12 * HOUR_MS + 1)] == [paused]
    assert store.get(delayed).due_at == T0 + 8 * HOUR_MS  # the legal limit stays
    assert store.flag_overdue(until) == []
    assert [r.request_id for r in store.flag_overdue(until + 1)] == [delayed]


def test_the_watcher_flags_on_its_own_and_records_it(settings: Settings, tmp_path: Path) -> None:
    network = keyed_example(settings, tmp_path)
    codec = Codec.from_settings(settings)
    clock = SimClock(T0)
    with request_network(settings, network, codec, clock, orgs=("police-se", "police-no")) as net:
        se, no = net.desks["police-se"], net.desks["police-no"]
        rid = se.request(
            "police-no",
            "case-9",
            {"urgent": True, "access": "DIRECT", "purpose": "p", "items": ["i"]},
        )
        se.flush()
        assert no.receive(expect=1) == 1
        metrics = setup_metrics(0, "requests-test")
        watcher = OverdueWatcher(no, interval=0.05, metrics=metrics).start()
        try:
            clock.now = T0 + 8 * HOUR_MS + 30_000
            wait_for(lambda: watcher.flagged == 1, 10, "the overdue flag")
            assert metrics.port is not None
            samples = scrape(metrics.port)
            assert value(samples, "referral_requests_overdue_total", organisation="police-no") == 1
        finally:
            watcher.stop()
            metrics.shutdown()
        assert no.store.get(rid).overdue_at == T0 + 8 * HOUR_MS + 30_000
    events = [
        e
        for r in read_topic(settings, settings.topic_names().ledger, at_least=4)
        for e in decode_events(codec, r.value)
        if e["event"] == "REQUEST_OVERDUE"
    ]
    assert [(e["referral_id"], e["actor"]) for e in events] == [(rid, "police-no")]


def test_an_answer_while_a_clarification_is_pending_counts_the_open_pause(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "r.sqlite3")
    rid = _received(store, True, "DIRECT")
    ask = _msg(MessageKind.CLARIFICATION_ASKED, rid, outgoing=True)
    store.record(ask, {"question": "q"}, me=ME, at=T0 + HOUR_MS)
    answer = _msg(MessageKind.ANSWER, rid, outgoing=True)
    store.record(answer, {"text": "a"}, me=ME, at=T0 + 10 * HOUR_MS)
    row = store.get(rid)
    # 8 h + the 9 h paused until the answer: the 10th hour is within the limit.
    assert (row.state, row.due_at, row.closed_at) == (
        "ANSWERED",
        T0 + 17 * HOUR_MS,
        T0 + 10 * HOUR_MS,
    )
