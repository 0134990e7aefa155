"""``--since`` / ``?since=`` values: a duration, an ISO date or time, or ``all``.

One parser for the CLI's ``flows`` and ``inbox`` and the console's inbox and flows pages.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from broker.errors import ConfigError
from broker.terminal import escape

__all__ = ["parse_since"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_SHOWN = 40  # characters of a bad value quoted back
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime, *, name: str = "--since") -> datetime | None:
    """``24h``, ``7d``, ``90s`` → that long before ``now``; an ISO date → it; ``all`` → None.

    An ISO date or time without a zone (``2026-11-22``, ``2026-11-22T08:00``) is UTC. A bad
    value is refused naming ``name``, what the user typed it in (the CLI's flag, a form field).
    """
    if text.strip().lower() == "all":
        return None
    m = _DURATION.match(text)
    if not m:
        try:
            at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            shown = text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
            raise ConfigError(
                f"{name}: expected a duration like 24h, 30m, 7d, an ISO date like 2026-11-22"
                f" or 2026-11-22T08:00Z, or 'all', not {escape(shown)!r}"
            ) from None
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
