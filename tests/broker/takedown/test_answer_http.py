"""The one-click answer links over real HTTP on loopback: signed, bounded, one-line errors."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from broker.errors import ConfigError
from broker.takedown.answer_http import MAX_BODY, AnswerServer
from broker.takedown.desk import TakedownDesk
from broker.takedown.desk_store import DESK_FILE, DeskStore
from broker.takedown.notices import Answer, Notice, answer_token
from broker.takedown.trail import TrailItem, TrailWriter, fact_of
from tests.support.takedown import HOUR, SimClock, scripted_providers, synthetic_id

SECRET = b"test-secret-not-for-production"


class _Quiet:
    def send(self, notice: Notice) -> None:
        """Sent nowhere."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    directory, _ = scripted_providers(2)
    clock = SimClock()
    events: list[dict[str, Any]] = []
    desk = TakedownDesk(
        TrailWriter(events.append, "hl-a", clock),
        directory,
        _Quiet(),
        secret=SECRET,
        sender_address="desk@hl-a.invalid",
        notifier="hl-a",
        store=DeskStore(tmp_path / DESK_FILE),
    )
    item = TrailItem(synthetic_id("r-1"), "case-1", synthetic_id("i-1"), "host-00", "NL")
    desk.open(item, "https://files.example.org/x")
    desk.police_informed(item.item_id, "police-nl")
    desk.tick()
    server = AnswerServer(desk, SECRET, threading.Lock())
    server.start()
    try:
        yield {"port": server.port, "desk": desk, "item": item, "events": events, "clock": clock}
    finally:
        server.stop()


def _ask(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    return response.status, text


def test_a_link_shows_a_page_and_its_post_records_the_answer_once(served: dict[str, Any]) -> None:
    """GET records nothing; POST records REMOVED at the provider's time; a repeat adds nothing."""
    port, item, events = served["port"], served["item"], served["events"]
    path = f"/takedown/answer/{answer_token(SECRET, item.item_id, Answer.REMOVED)}"
    before = len(events)
    status, page = _ask(port, "GET", path)
    assert status == 200
    assert "<form method=post" in page
    assert len(events) == before
    removed = served["clock"].now - 2 * HOUR
    at = datetime.fromtimestamp(removed / 1000, UTC).isoformat()
    status, text = _ask(port, "POST", path, urlencode({"at": at}).encode())
    assert (status, text) == (200, f"recorded: removed for item {item.item_id}\n")
    steps = [fact_of(e["event_id"], "", "", None, e["reason"], e["at"]) for e in events[before:]]
    assert [(f.step.value, f.at_ms) for f in steps if f] == [
        ("PROVIDER_ANSWERED", served["clock"].now),
        ("REMOVED", removed),
    ]
    assert _ask(port, "POST", path)[1] == f"already answered: item {item.item_id}\n"
    assert len(events) == before + 2
    assert served["desk"].get(item.item_id).answered


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "line"),
    [
        ("GET", "/takedown/answer/forged.removed.00", None, 400, "the answer link is not valid"),
        ("POST", "/takedown/answer/x.removed.00", None, 400, "the answer link is not valid"),
        ("GET", "/elsewhere", None, 404, "no such page"),
        ("GET", "/takedown/answer/" + "a" * 600, None, 414, "the link is too long"),
        ("POST", "TOKEN", b"x" * (MAX_BODY + 1), 413, "the request body is too large"),
        ("POST", "TOKEN", b"at=yesterday", 400, "at: not an ISO 8601 time"),
        ("POST", "TOKEN", b"at=2026-01-05T00:00:00", 400, "at: needs a time zone (e.g. Z)"),
        ("POST", "TOKEN", b"at=2099-01-01T00:00:00Z", 400, "the provider's answer is dated"),
        ("POST", "OTHER", None, 404, "no such item on the desk"),
    ],
)
def test_bad_requests_get_one_line(
    served: dict[str, Any], method: str, path: str, body: bytes | None, status: int, line: str
) -> None:
    """Forged, unknown, oversized and malformed requests: one plain line, nothing recorded."""
    item = served["item"]
    if path == "TOKEN":
        path = f"/takedown/answer/{answer_token(SECRET, item.item_id, Answer.REMOVED)}"
    elif path == "OTHER":
        path = f"/takedown/answer/{answer_token(SECRET, synthetic_id('nope'), Answer.REMOVED)}"
    before = len(served["events"])
    got, text = _ask(served["port"], method, path, body)
    assert got == status
    assert text.startswith(line)
    assert text.count("\n") == 1
    assert "Traceback" not in text
    assert len(served["events"]) == before
    assert not served["desk"].get(item.item_id).answered


def test_the_endpoint_listens_on_loopback_only(served: dict[str, Any]) -> None:
    """A public address is refused (a reverse proxy publishes it)."""
    with pytest.raises(ConfigError, match="loopback only"):
        AnswerServer(served["desk"], SECRET, threading.Lock(), host="0.0.0.0")
