"""The consultation log (Art. 25 LED): every opening of a referral body, from the ledger.

Each path that opens a body records one signed handover event saying who, when and
why (a path code and a reason, never content). A sink's opening is recorded by the
DELIVERED (or DUPLICATE_SKIPPED) event the sink driver emits anyway, batched with its
commit; every other opening is an ACCESSED event whose reason starts with its path code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.ledger.views import HandoverRecord

__all__ = [
    "CONSOLE_PAGE",
    "CONSOLE_REVEAL",
    "PATHS",
    "SHOW",
    "SINK_DELIVERY",
    "TAIL_REVEAL",
    "Consultation",
    "consultation_reason",
    "consultations",
]

SINK_DELIVERY = "sink-delivery"
CONSOLE_PAGE = "console-page"
CONSOLE_REVEAL = "console-reveal"
TAIL_REVEAL = "tail-reveal"
SHOW = "show"
#: Every path that opens a body, as it is named in the consultation log.
PATHS = (SINK_DELIVERY, CONSOLE_PAGE, CONSOLE_REVEAL, TAIL_REVEAL, SHOW)
#: What ACCESSED reasons said before the path codes (``tail --reveal`` and console reveals).
_EARLIER = {"tail --reveal": TAIL_REVEAL, "console reveal": CONSOLE_REVEAL}
_SINK_EVENTS = ("DELIVERED", "DUPLICATE_SKIPPED")


def consultation_reason(path: str, why: str) -> str:
    """The reason an ACCESSED event carries for an opening on ``path`` (a code, then why)."""
    if path not in PATHS:
        raise ValueError(f"unknown consultation path {path!r}")
    why = " ".join(why.split())
    return f"{path}: {why}" if why else path


@dataclass(frozen=True, slots=True)
class Consultation:
    """One opening of a body: who (organisation), when, why, along which path and which copy."""

    at: datetime
    who: str
    path: str
    why: str
    topic: str | None
    partition: int | None
    offset: int | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``at`` as ISO 8601)."""
        return {
            "at": self.at.isoformat(),
            "who": self.who,
            "path": self.path,
            "why": self.why,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }


def _path_of(reason: str) -> tuple[str, str]:
    for earlier, path in _EARLIER.items():
        if reason.startswith(earlier):
            return path, reason[len(earlier) :].lstrip(" :")
    head, _, rest = reason.partition(":")
    code = head.split(" ", 1)[0]
    if code in PATHS:
        return code, (head[len(code) :].strip() + (": " if rest else "") + rest.strip()).strip(": ")
    return "unknown", reason


def consultations(records: Iterable[HandoverRecord]) -> list[Consultation]:
    """The openings of bodies among one referral's ``records`` (with its PUBLISHED), oldest
    first."""
    records = list(records)
    # The origin's own DELIVERED events are of status updates, not of the body.
    origins = {r.actor for r in records if r.event == "PUBLISHED"}
    out: list[Consultation] = []
    for r in records:
        if r.event in _SINK_EVENTS and r.to_party == r.actor and r.actor not in origins:
            path, why = SINK_DELIVERY, f"{r.event.lower()} {r.reason or ''}".strip()
        elif r.event == "ACCESSED":
            path, why = _path_of(r.reason or "")
        else:
            continue
        out.append(Consultation(r.at, r.actor, path, why, r.topic, r.partition, r.offset))
    return sorted(out, key=lambda c: c.at)
