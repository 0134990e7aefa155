"""The HTTP intake's connection guard: a header timeout and connection limits."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["PER_ADDRESS", "ConnectionGuard", "GuardedH11", "guarded_h11"]

log = logging.getLogger("referral.connectors.http_intake")

#: How many connections from one client address, unless told otherwise.
PER_ADDRESS = 16


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


class ConnectionGuard:
    """The limits, and the peers (``(host, port)``) that gave the right token on a connection."""

    def __init__(self, max_connections: int, per_address: int = PER_ADDRESS) -> None:
        self.max_connections = max_connections
        self.per_address = max(1, min(per_address, max_connections))
        #: Connections kept for clients that gave the right token.
        self.reserve = max_connections // 4
        self.proven: set[tuple[str, int]] = set()

    def prove(self, client: tuple[str, int] | None) -> None:
        """Remember that the connection of ``client`` carried the right token."""
        if client is not None:
            self.proven.add(client)


class GuardedH11(H11Protocol):
    """One connection: sheds an idle one or is refused over a limit; slow headers closed.

    :func:`guarded_h11` makes a subclass with its limits and answers set.
    """

    limits: ClassVar[ConnectionGuard]
    busy: ClassVar[bytes]
    slow: ClassVar[bytes]
    header_timeout: ClassVar[float]
    order: ClassVar[Iterator[int]]

    _header_timer: asyncio.TimerHandle | None = None
    _shed = False
    _seq = 0
    _peer: tuple[str, int] | None = None

    @property
    def _proven(self) -> bool:
        return self._peer in self.limits.proven

    @property
    def _idle(self) -> bool:
        """No request of this connection is being served (none arrived, or answered)."""
        return self.cycle is None or self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer: Any = transport.get_extra_info("peername")
        self._peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self._seq = next(self.order)
        live = [c for c in self.connections if isinstance(c, GuardedH11) and not c._shed]
        host = self._peer[0] if self._peer else None
        mine = [c for c in live if c._peer is not None and c._peer[0] == host]
        if len(mine) >= self.limits.per_address:
            room = self._shed_one(mine, "from one address")
        elif len(live) >= self.limits.max_connections:
            room = self._shed_one(live, "in all")
        elif sum(not c._proven for c in live) >= self.limits.max_connections - self.limits.reserve:
            room = self._shed_one([c for c in live if not c._proven], "unauthenticated")
        else:
            room = True
        if not room:
            self.transport = transport  # connection_lost closes it
            self._shed = True
            transport.write(self.busy)
            transport.close()
            log.warning("http intake: connection refused, %d open", len(live))
            return
        super().connection_made(transport)
        self._arm()

    def _shed_one(self, among: list[GuardedH11], limit: str) -> bool:
        """Close the oldest idle connection ``among`` (unauthenticated first); False if none."""
        idle = [c for c in among if c._idle]
        if not idle:
            return False
        victim = min(idle, key=lambda c: (c._proven, c._seq))
        victim._shed = True
        victim._disarm()
        if not victim.transport.is_closing():
            victim.transport.write(self.busy)
            victim.transport.close()
        log.info("http intake: oldest idle connection shed (limit %s)", limit)
        return True

    def data_received(self, data: bytes) -> None:
        if self._shed:
            return
        super().data_received(data)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._peer is not None:
            self.limits.proven.discard(self._peer)
        super().connection_lost(exc)

    def _arm(self) -> None:
        """Run the header clock while no complete request head has arrived."""
        if self.conn.their_state is not h11.IDLE:
            self._disarm()
        elif self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.write(self.slow)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # idle now: uvicorn's keep-alive timeout applies


def guarded_h11(
    header_timeout: float, max_connections: int, guard: ConnectionGuard | None = None
) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header timeout and per-address and total limits."""
    late = f"headers not received in {header_timeout:g}s"
    attrs = {
        "limits": guard or ConnectionGuard(max_connections),
        "busy": _raw_problem(503, "Service Unavailable", "too many connections; try again"),
        "slow": _raw_problem(408, "Request Timeout", late),
        "header_timeout": header_timeout,
        "order": itertools.count(),
    }
    return type("GuardedH11", (GuardedH11,), attrs)
