"""The HTTP intake's connection guard: a header timeout and a connection limit.

uvicorn bounds the idle time between requests (``timeout_keep_alive``) but not
how long a client may take to send a request's line and headers, so a client
sending one byte at a time could hold a connection for ever. :func:`guarded_h11`
builds uvicorn's h11 protocol with two more rules:

* a request's line and headers must arrive within ``header_timeout`` seconds of
  the connection (or of the first byte after a previous response); otherwise
  ``408`` and the connection is closed;
* at most ``max_connections`` connections at once; one more is answered ``503``
  (``application/problem+json``, ``Retry-After``) and closed at once.

The body has its own deadline in the application (``body_timeout``). Both
answers are immediate, so ``GET /health`` stays fast while slow clients are
cut off.
"""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["guarded_h11"]

log = logging.getLogger("referral.connectors.http_intake")


def _raw_problem(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps(
        {"type": "about:blank", "title": reason, "status": status, "detail": detail}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if status == 503:
        head += "Retry-After: 1\r\n"
    return head.encode() + b"\r\n" + body


def guarded_h11(header_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header timeout and a connection limit."""
    busy = _raw_problem(503, "Service Unavailable", "too many connections; try again")
    slow = _raw_problem(408, "Request Timeout", f"headers not received in {header_timeout:g}s")

    class GuardedH11(H11Protocol):
        """One connection: refused over the limit, closed if its headers are too slow."""

        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                self.transport = transport  # connection_lost closes it
                transport.write(busy)
                transport.close()
                log.warning("http intake: connection refused, %d open", len(self.connections))
                return
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            """Run the header clock while no complete request head has arrived."""
            if self.conn.their_state is not h11.IDLE:
                self._disarm()
            elif self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.write(slow)
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # idle now: uvicorn's keep-alive timeout applies

    return GuardedH11
