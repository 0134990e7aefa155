"""When a signature may be accepted: a pure check of its creation time."""

from __future__ import annotations

import time
from dataclasses import dataclass

from broker.errors import SignatureOutOfWindow

__all__ = ["DEFAULT_MAX_AGE_DAYS", "DEFAULT_SKEW_SECONDS", "SignatureWindow", "now_ms"]

#: How old a signature may be by default.
DEFAULT_MAX_AGE_DAYS = 30.0
#: How far in the future a signature may lie by default (clocks differ between organisations).
DEFAULT_SKEW_SECONDS = 300.0

_DAY_MS = 86_400_000


def now_ms() -> int:
    """The current time in milliseconds since the epoch (what signatures carry)."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class SignatureWindow:
    """The accepted range of signing times, relative to the receiver's clock."""

    max_age_days: float = DEFAULT_MAX_AGE_DAYS
    skew_seconds: float = DEFAULT_SKEW_SECONDS

    def check(self, signed_ms: int, now: int | None = None, *, what: str = "signature") -> None:
        """SignatureOutOfWindow unless ``signed_ms`` lies within the window around ``now``."""
        now = now_ms() if now is None else now
        age = now - signed_ms
        if age > self.max_age_days * _DAY_MS:
            raise SignatureOutOfWindow(
                f"{what} expired: signed {age / _DAY_MS:.1f} days ago, the network accepts "
                f"{self.max_age_days:g} days"
            )
        if -age > self.skew_seconds * 1000:
            raise SignatureOutOfWindow(
                f"{what} from the future: signed {-age / 1000:.0f} s ahead of this clock, the "
                f"network accepts {self.skew_seconds:g} s of skew"
            )
