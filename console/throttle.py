"""Failed console logins, per client address: a slowdown, then a lockout, each one logged."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from broker.terminal import escape

__all__ = [
    "FREE_FAILURES",
    "LOCK_AFTER",
    "LOCK_SECONDS",
    "MAX_DELAY",
    "MIN_TOKEN_LENGTH",
    "TOKEN_HINT",
    "LoginThrottle",
]

log = logging.getLogger("referral.console")

#: Wrong tokens an address may try before it is slowed down.
FREE_FAILURES = 5
#: Failures after which the address is locked out.
LOCK_AFTER = 20
#: How long a lockout lasts (and how long an address's failures are remembered).
LOCK_SECONDS = 15 * 60.0
#: The longest wait between two attempts before the lockout.
MAX_DELAY = 60.0
#: The most addresses remembered (the oldest forgotten first).
MAX_ADDRESSES = 10_000
#: The shortest console token accepted at start-up.
MIN_TOKEN_LENGTH = 32
#: How to make a token that is long enough.
TOKEN_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Failed logins by client address (thread-safe, in memory)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, address: str) -> float:
        """Seconds ``address`` must still wait before a token of its is checked (0: go ahead).

        A refused attempt counts as a failure (and is logged).
        """
        with self._lock:
            now = self._clock()
            record = self._current(address, now)
            if record is None:
                return 0.0
            just_locked = False
            if record.locked_until > now:
                left = record.locked_until - now
            else:
                left = record.last + _delay(record.failures) - now
                if left <= 0:
                    return 0.0
                self._fail(record, now)
                just_locked = record.locked_until > now
                left = record.locked_until - now if just_locked else left
            failures = record.failures
        log.warning(
            "console login refused from %s: too many failed logins (%d), %.0f s left%s",
            escape(address),
            failures,
            left,
            f"; locked out for {LOCK_SECONDS / 60:.0f} min" if just_locked else "",
        )
        return left

    def failed(self, address: str) -> None:
        """Record a wrong token from ``address`` (logged with the address, never the token)."""
        with self._lock:
            now = self._clock()
            record = self._current(address, now) or _Record()
            self._records[address] = record
            self._records.move_to_end(address)
            while len(self._records) > MAX_ADDRESSES:
                self._records.popitem(last=False)
            self._fail(record, now)
            failures, locked = record.failures, record.locked_until > now
        log.warning(
            "console login failed from %s: wrong token (%d failure(s)%s)",
            escape(address),
            failures,
            f"; locked out for {LOCK_SECONDS / 60:.0f} min" if locked else "",
        )

    def succeeded(self, address: str) -> None:
        """Forget the failures of ``address`` (it gave a correct token)."""
        with self._lock:
            self._records.pop(address, None)

    def _current(self, address: str, now: float) -> _Record | None:
        """The address's record unless its lockout, or its last failure, is long past."""
        record = self._records.get(address)
        if record is None:
            return None
        if record.locked_until and record.locked_until <= now:
            del self._records[address]  # the lockout served: a fresh start
            return None
        if not record.locked_until and now - record.last >= LOCK_SECONDS:
            del self._records[address]
            return None
        return record

    @staticmethod
    def _fail(record: _Record, now: float) -> None:
        record.failures += 1
        record.last = now
        if record.failures >= LOCK_AFTER and record.locked_until <= now:
            record.locked_until = now + LOCK_SECONDS


def _delay(failures: int) -> float:
    """The wait after ``failures`` failures: none for the first few, then doubling."""
    if failures < FREE_FAILURES:
        return 0.0
    return float(min(MAX_DELAY, 2.0 ** (failures - FREE_FAILURES)))
