"""Notices to a provider's abuse API: a real HTTP server receives signed JSON; refusals retry."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from broker.takedown.desk import TakedownDesk
from broker.takedown.notices import Answer, ProviderRouter, SmtpSender, WebhookSender
from broker.takedown.providers import Provider, ProviderDirectory
from broker.takedown.trail import TrailItem, TrailWriter
from tests.support.takedown import MINUTE, SimClock, smtp_port, start_smtp, synthetic_id

SECRET = b"webhook-test-secret"


class _Api(BaseHTTPRequestHandler):
    got: list[tuple[dict[str, str], bytes]]
    status: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append((dict(self.headers), body))
        self.send_response(type(self).status[0])
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def api() -> Iterator[tuple[str, type[_Api]]]:
    handler = type("Api", (_Api,), {"got": [], "status": [202]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/notices", handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_provider_with_an_abuse_api_gets_signed_json_and_a_refusal_is_retried(
    api: tuple[str, type[_Api]],
) -> None:
    url, handler = api
    controller, inbox = start_smtp()
    try:
        directory = ProviderDirectory(
            [
                Provider("host-api", "API host", "NL", "abuse@host-api.invalid", abuse_webhook=url),
                Provider("host-mail", "Mail host", "DE", "abuse@host-mail.invalid"),
            ]
        )
        clock = SimClock()
        events: list[dict[str, Any]] = []
        webhook = WebhookSender(secret=SECRET, answer_base="https://desk.invalid")
        mail = SmtpSender("127.0.0.1", smtp_port(controller), secret=SECRET, answer_base="x")
        desk = TakedownDesk(
            TrailWriter(events.append, "hl-a", clock),
            directory,
            ProviderRouter(directory, mail, webhook),
            secret=SECRET,
            sender_address="desk@hl-a.invalid",
            notifier="hl-a",
        )
        items = [
            TrailItem(synthetic_id("r"), "c", synthetic_id(f"i{k}"), provider, country)
            for k, (provider, country) in enumerate([("host-api", "NL"), ("host-mail", "DE")])
        ]
        for k, item in enumerate(items):
            desk.open(item, f"https://files-{k}.example.org/a")
            desk.police_informed(item.item_id, "police-nl")
        handler.status[0] = 422  # the API refuses: nothing recorded, retried at the next tick
        desk.tick()
        sent = [e for e in events if e["reason"].startswith("NOTICE_SENT")]
        assert [e["to_party"] for e in sent] == ["host-mail"]
        assert len(inbox.take()) == 1
        handler.status[0] = 202
        clock.now += MINUTE
        desk.tick()
        sent = [e for e in events if e["reason"].startswith("NOTICE_SENT")]
        assert [e["to_party"] for e in sent] == ["host-mail", "host-api"]
        assert inbox.take() == []  # the mail provider was not notified twice
        headers, body = handler.got[-1]
        assert len(handler.got) == 2
        mac = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        assert headers["X-Notice-Signature"] == f"sha256={mac}"
        notice = json.loads(body)
        assert notice["trusted_flagger"] is True
        assert [i["location"] for i in notice["items"]] == ["https://files-0.example.org/a"]
        link = notice["items"][0]["answer"]["removed"]
        assert desk.answer_link(link.rsplit("/", 1)[1]) == (items[0].item_id, Answer.REMOVED)
        webhook.close()
    finally:
        controller.stop()
