"""The desk's answer endpoint: the notices' signed one-click links, served on loopback.

``GET /takedown/answer/<token>`` shows what the link answers and one button;
``POST`` to the same path records it (a mail scanner that follows links records
nothing). The POST body may carry ``at=<ISO 8601>``: when the provider removed
it (else: now). Bounded: a path of at most 512 characters, a body of at most
1 KiB, 5 s per request; every error is one plain-text line, never a traceback.
A reverse proxy in front makes it public (``answer_base`` in the notices).
"""

from __future__ import annotations

import html
import logging
import threading
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from broker.errors import ConfigError, SecurityError
from broker.takedown.desk import TakedownDesk
from broker.takedown.notices import read_token

__all__ = ["MAX_BODY", "MAX_PATH", "AnswerServer"]

log = logging.getLogger("referral.takedown.answers")

#: The longest request path served.
MAX_PATH = 512
#: The largest request body read.
MAX_BODY = 1024
_PREFIX = "/takedown/answer/"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0
    server_version = "referral-takedown"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        """Nothing: the path holds a token (the outcome is logged by id instead)."""

    def _line(self, status: HTTPStatus, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _token(self) -> str | None:
        if len(self.path) > MAX_PATH:
            self._line(HTTPStatus.REQUEST_URI_TOO_LONG, "the link is too long")
            return None
        if not self.path.startswith(_PREFIX):
            self._line(HTTPStatus.NOT_FOUND, "no such page")
            return None
        return self.path[len(_PREFIX) :]

    def do_GET(self) -> None:
        """The confirmation page of one link."""
        token = self._token()
        if token is None:
            return
        try:
            item_id, answer = read_token(self.server.secret, token)
        except SecurityError:
            self._line(HTTPStatus.BAD_REQUEST, "the answer link is not valid")
            return
        page = (
            "<!doctype html><meta charset=utf-8><title>Takedown answer</title>"
            f"<p>Item {html.escape(item_id)}: <b>{html.escape(answer.value)}</b></p>"
            f'<form method=post action="{html.escape(self.path)}">'
            "<button type=submit>Confirm</button></form>"
        ).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def _at(self) -> tuple[bool, int | None]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._line(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the request body is too large")
            return False, None
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace")) if length else {}
        raw = form.get("at", [""])[0]
        if not raw:
            return True, None
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            self._line(HTTPStatus.BAD_REQUEST, "at: not an ISO 8601 time")
            return False, None
        if when.tzinfo is None:
            self._line(HTTPStatus.BAD_REQUEST, "at: needs a time zone (e.g. Z)")
            return False, None
        return True, int(when.timestamp() * 1000)

    def do_POST(self) -> None:
        """Record the answer of one link (once; a repeat is acknowledged, not recorded)."""
        token = self._token()
        if token is None:
            return
        ok, at_ms = self._at()
        if not ok:
            return
        desk = self.server.desk
        try:
            item_id, answer = read_token(self.server.secret, token)
            with self.server.lock:
                if not desk.has(item_id):
                    self._line(HTTPStatus.NOT_FOUND, "no such item on the desk")
                    return
                if desk.get(item_id).answered:
                    self._line(HTTPStatus.OK, f"already answered: item {item_id}")
                    return
                desk.answer(item_id, answer, at_ms=at_ms)
        except SecurityError:
            self._line(HTTPStatus.BAD_REQUEST, "the answer link is not valid")
            return
        except ConfigError as exc:
            self._line(HTTPStatus.BAD_REQUEST, str(exc).splitlines()[0])
            return
        log.info("item %s answered %s by link", item_id, answer.value)
        self._line(HTTPStatus.OK, f"recorded: {answer.value} for item {item_id}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], desk: TakedownDesk, secret: bytes, lock: threading.Lock
    ) -> None:
        super().__init__(address, _Handler)
        self.desk, self.secret, self.lock = desk, secret, lock


class AnswerServer:
    """Serves one desk's answer links on ``host:port`` (loopback; port 0: any free one)."""

    def __init__(
        self,
        desk: TakedownDesk,
        secret: bytes,
        lock: threading.Lock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError(f"the answer endpoint listens on loopback only, not {host}")
        self._server = _Server((host, port), desk, secret, lock)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="takedown-answers", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
