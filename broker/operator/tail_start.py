"""Where ``referral tail -o`` starts reading, kcat's way.

``beginning``, ``end``, an absolute ``OFFSET``, ``-N`` (the last N records of
each partition) or ``s@TIMESTAMP`` (the first record at or after a time in ms
since the epoch, or an ISO 8601 time). Parsing and :func:`plan` are pure;
:func:`positions` asks the consumer for the offsets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from broker.errors import ConfigError

__all__ = ["Start", "parse_start", "plan", "positions"]

Kind = Literal["beginning", "end", "offset", "last", "time"]

_HINT = "give beginning, end, an offset, -N (the last N) or s@TIMESTAMP (ms or ISO 8601)"


@dataclass(frozen=True)
class Start:
    """A parsed ``-o`` value: what kind of start and its number (offset, count or ms)."""

    kind: Kind
    value: int = 0


def _time_ms(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"-o s@{text}: not a time; {_HINT}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def parse_start(text: str) -> Start:
    """The start ``text`` names; a :class:`ConfigError` in the user's words if none."""
    t = text.strip().lower()
    if t in ("beginning", "begin", "start", "earliest"):
        return Start("beginning")
    if t in ("end", "latest"):
        return Start("end")
    if t.startswith("s@"):
        return Start("time", _time_ms(text.strip()[2:]))
    if t.startswith("-") and t[1:].isdigit():
        return Start("last", int(t[1:]))
    if t.isdigit():
        return Start("offset", int(t))
    raise ConfigError(f"-o {text!r}: {_HINT}")


def positions(consumer: Any, tps: Sequence[Any], start: Start) -> dict[Any, int]:
    """The offset to read each partition of ``tps`` from, asked of ``consumer``."""
    first = consumer.beginning_offsets(list(tps))
    end = consumer.end_offsets(list(tps))
    found: dict[Any, Any] = {}
    if start.kind == "time":
        found = consumer.offsets_for_times(dict.fromkeys(tps, start.value))
    at_time = {tp: int(hit.offset) for tp, hit in found.items() if hit is not None}
    return plan(start, first, end, at_time)


def plan(
    start: Start, first: Mapping[Any, int], end: Mapping[Any, int], at_time: Mapping[Any, int]
) -> dict[Any, int]:
    """Each partition's start from its first and end offsets (and the offset at the time)."""
    out: dict[Any, int] = {}
    for tp in end:
        lo, hi = int(first[tp]), int(end[tp])
        if start.kind == "time":
            out[tp] = at_time.get(tp, hi)
        elif start.kind == "beginning":
            out[tp] = lo
        elif start.kind == "end":
            out[tp] = hi
        elif start.kind == "last":
            out[tp] = max(lo, hi - start.value)
        else:
            out[tp] = min(max(lo, start.value), hi)
    return out
