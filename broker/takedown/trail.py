"""The per-item takedown trail: each step one ``TAKEDOWN`` handover event, ids only.

An event's ``reason`` holds the step and the ids it is about, never a URL, hash
or note::

    <STEP> item=<item uuid> provider=<provider id> cc=<hosting country> route=<route> n=<k>

``n`` counts repeats of a step (the k-th notice, re-check or answer), so every
step occurrence has its own event id (ids are derived from what an event says).
``from_party`` is the hotline that acts, ``to_party`` whom the step concerns
(police, the provider, an escalation target).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from broker.errors import ConfigError
from broker.ledger.events import handover_event
from broker.wire.models import HandoverEventType

__all__ = [
    "OUTCOMES",
    "REASON",
    "ROUTES",
    "STEPS",
    "TakedownStep",
    "TrailFact",
    "TrailItem",
    "TrailWriter",
    "fact_of",
    "parse_reason",
    "trail_reason",
]


class TakedownStep(StrEnum):
    """The steps of an item's trail, from the hotline's confirmation to its re-check."""

    #: the hotline confirmed the item illegal: the trail (and time to removal) starts
    OPENED = "OPENED"
    POLICE_INFORMED = "POLICE_INFORMED"
    #: law enforcement cleared the notice (where the rules want clearance first)
    LEA_CLEARED = "LEA_CLEARED"
    NOTICE_SENT = "NOTICE_SENT"
    NOTICE_REPEATED = "NOTICE_REPEATED"
    ESCALATED = "ESCALATED"
    PROVIDER_ANSWERED = "PROVIDER_ANSWERED"
    REMOVED = "REMOVED"
    STILL_ONLINE = "STILL_ONLINE"
    MOVED = "MOVED"
    NOT_ILLEGAL = "NOT_ILLEGAL"
    RECHECKED = "RECHECKED"


#: Steps that say what became of the item.
OUTCOMES = frozenset(
    {TakedownStep.REMOVED, TakedownStep.STILL_ONLINE, TakedownStep.MOVED, TakedownStep.NOT_ILLEGAL}
)
#: How the item reached its hosting country: a member of the network, or the fallback.
ROUTES = ("network", "fallback")

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_CC = re.compile(r"^[A-Z]{2}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class TrailItem:
    """One item under takedown: its referral, its id and where it is hosted (ids only)."""

    referral_id: str
    case_id: str
    item_id: str
    provider: str
    country: str
    route: str = "network"

    def __post_init__(self) -> None:
        if not _UUID.match(self.item_id) or not _UUID.match(self.referral_id):
            raise ConfigError("a takedown item needs UUID referral and item ids")
        if not _ID.match(self.provider):
            raise ConfigError(f"provider id {self.provider!r} is not a lower-case id")
        if not _CC.match(self.country):
            raise ConfigError(f"hosting country {self.country!r} is not a country code")
        if self.route not in ROUTES:
            raise ConfigError(f"route {self.route!r} is not one of {', '.join(ROUTES)}")


def trail_reason(step: TakedownStep, item: TrailItem, n: int = 0) -> str:
    """The ``reason`` of a trail event: the step, the item's ids and the repeat count."""
    return (
        f"{step.value} item={item.item_id} provider={item.provider} "
        f"cc={item.country} route={item.route} n={n}"
    )


class TrailFact(NamedTuple):
    """One trail step as read back from the ledger."""

    event_id: str
    referral_id: str
    actor: str
    step: TakedownStep
    item_id: str
    provider: str
    country: str
    route: str
    n: int
    at_ms: int
    to_party: str | None = None


#: The steps by name.
STEPS: dict[str, TakedownStep] = dict(TakedownStep.__members__)
#: The shape of a trail ``reason`` (groups: step, item, provider, country, route, n).
REASON = re.compile(r"([A-Z_]+) item=(\S+) provider=(\S+) cc=(\S+) route=(\S+) n=(\d+)")


def _split(reason: str) -> tuple[TakedownStep, str, str, str, str, int] | None:
    """The step, item, provider, country, route and n of a trail reason (None: not one)."""
    m = REASON.fullmatch(reason)
    if m is None:
        return None
    name, item_id, provider, country, route, n = m.groups()
    step = STEPS.get(name)
    if step is None:
        return None
    return step, item_id, provider, country, route, int(n)


def parse_reason(reason: str | None) -> dict[str, str] | None:
    """The step and ids of a trail ``reason`` (None: not a trail reason)."""
    if not reason:
        return None
    step, _, rest = reason.partition(" ")
    if step not in TakedownStep.__members__:
        return None
    out = {"step": step}
    for part in rest.split(" "):
        key, sep, value = part.partition("=")
        if not sep:
            return None
        out[key] = value
    if not {"item", "provider", "cc", "route", "n"} <= out.keys():
        return None
    return out


#: A clock in milliseconds since the epoch (UTC).
Clock = Callable[[], int]


class TrailWriter:
    """Writes an actor's trail steps as ``TAKEDOWN`` events through ``emit`` (a ledger's)."""

    def __init__(self, emit: Callable[[dict[str, Any]], object], actor: str, clock: Clock) -> None:
        self._emit = emit
        self.actor = actor
        self.clock = clock

    def record(
        self,
        step: TakedownStep,
        item: TrailItem,
        *,
        n: int = 0,
        to_party: str | None = None,
        at_ms: int | None = None,
    ) -> dict[str, Any]:
        """Emit one step (at ``at_ms``, else now by the clock); the event as emitted."""
        event = handover_event(
            HandoverEventType.TAKEDOWN,
            referral_id=item.referral_id,
            case_id=item.case_id,
            actor=self.actor,
            from_party=self.actor,
            to_party=to_party,
            reason=trail_reason(step, item, n),
            at_ms=self.clock() if at_ms is None else at_ms,
        )
        self._emit(event)
        return event


def fact_of(
    event_id: str,
    referral_id: str,
    actor: str,
    to_party: str | None,
    reason: str | None,
    at_ms: int,
) -> TrailFact | None:
    """The trail fact of one ``TAKEDOWN`` event's fields (None: its reason is not a trail's)."""
    split = _split(reason) if reason else None
    if split is None:
        return None
    step, item_id, provider, country, route, n = split
    return TrailFact(
        event_id, referral_id, actor, step, item_id, provider, country, route, n, at_ms, to_party
    )
