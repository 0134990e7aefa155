"""The overdue watcher: flags every request owed past its limit, well within 60 seconds.

Limits (:func:`broker.requests.codes.limit_ms`) run from receipt on the desk's
clock; a clarification asked pauses them until it is given; a DELAY moves the
alarm to the date it announced (the legal limit stays, and counts as missed).
A request is overdue when the clock is past its alarm and it is still open and
not paused; each is flagged once, as a signed ``REQUEST_OVERDUE`` ledger event.
"""

from __future__ import annotations

import logging
import threading

from broker.metrics import Metrics
from broker.requests.desk import Desk

__all__ = ["WATCH_INTERVAL_S", "OverdueWatcher"]

log = logging.getLogger(__name__)

#: How often the watcher looks (seconds of wall time): half the 60 s the flag may take.
WATCH_INTERVAL_S = 30.0


class OverdueWatcher:
    """Runs :meth:`Desk.flag_overdue` every ``interval`` seconds in a thread until stopped."""

    def __init__(
        self, desk: Desk, interval: float = WATCH_INTERVAL_S, metrics: Metrics | None = None
    ) -> None:
        self.desk = desk
        self.interval = interval
        self.flagged = 0
        meter = metrics.meter("requests") if metrics is not None else None
        #: ``referral.requests.overdue``: requests flagged overdue, by SPOC (no ids, no content).
        self._counter = (
            meter.create_counter(
                "referral.requests.overdue", "{request}", "Requests flagged overdue, by SPOC."
            )
            if meter is not None
            else None
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> int:
        """Look once; how many requests were newly flagged."""
        found = self.desk.flag_overdue()
        if found:
            self.desk.flush()
            log.info("%d request(s) owed by %s are overdue", len(found), self.desk.me)
        self.flagged += len(found)
        if self._counter is not None and found:
            self._counter.add(len(found), {"organisation": self.desk.me})
        return len(found)

    def _run(self) -> None:
        while True:
            self.check()
            if self._stop.wait(self.interval):
                return

    def start(self) -> OverdueWatcher:
        """Start watching in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="overdue-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (waits for the thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
