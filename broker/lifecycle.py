"""The status lifecycle of a referral at one receiving organisation: a pure state machine."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from broker.errors import ValidationFailed
from broker.wire.models import ReferralStatus

__all__ = [
    "FINAL",
    "LIFECYCLE",
    "STAGE",
    "LifecycleError",
    "advance",
    "allowed_next",
    "current_status",
    "describe_refusal",
    "reason_code",
]

S = ReferralStatus

#: Status → the statuses that may follow it (DELAYED included where a step is still due).
LIFECYCLE: dict[ReferralStatus, tuple[ReferralStatus, ...]] = {
    S.RECEIVED: (S.ASSESSED, S.ACCEPTED, S.REJECTED, S.REROUTED, S.DELAYED),
    S.ASSESSED: (S.ACCEPTED, S.REJECTED, S.REROUTED, S.DELAYED),
    S.ACCEPTED: (S.NTD_SENT, S.REFERRED_TO_LE, S.REROUTED, S.CLOSED, S.DELAYED),
    S.NTD_SENT: (S.NTD_SENT, S.STILL_ONLINE, S.REMOVED, S.CLOSED, S.DELAYED),
    S.STILL_ONLINE: (S.NTD_SENT, S.STILL_ONLINE, S.REMOVED, S.REFERRED_TO_LE, S.CLOSED, S.DELAYED),
    S.REFERRED_TO_LE: (S.REMOVED, S.CLOSED, S.DELAYED),
    S.REMOVED: (S.CLOSED, S.DELAYED),
    S.REJECTED: (),
    S.REROUTED: (),
    S.CLOSED: (),
}

#: The stage of each status (DELAYED has none: it is not a stage).
STAGE: dict[ReferralStatus, int] = {
    S.RECEIVED: 1,
    S.ASSESSED: 2,
    S.ACCEPTED: 3,
    S.NTD_SENT: 4,
    S.STILL_ONLINE: 4,
    S.REFERRED_TO_LE: 4,
    S.REMOVED: 5,
    S.REJECTED: 6,
    S.REROUTED: 6,
    S.CLOSED: 6,
}

#: Statuses after which nothing more may be reported.
FINAL = frozenset(s for s, nxt in LIFECYCLE.items() if not nxt)


class LifecycleError(ValidationFailed):
    """A status that may not follow the referral's current status (e.g. ACCEPTED after CLOSED)."""

    def __init__(self, current: ReferralStatus | None, status: ReferralStatus) -> None:
        self.current = current
        self.status = status
        self.allowed = allowed_next(current)
        line = describe_refusal(current, status)
        super().__init__(line, [line])


def _status(value: ReferralStatus | str) -> ReferralStatus:
    return value if isinstance(value, ReferralStatus) else ReferralStatus(str(value))


def allowed_next(current: ReferralStatus | str | None) -> tuple[ReferralStatus, ...]:
    """The statuses a person may report after ``current`` (None: nothing reported yet)."""
    if current is None:
        return (S.RECEIVED, *LIFECYCLE[S.RECEIVED])
    return LIFECYCLE[_status(current)]


def describe_refusal(current: ReferralStatus | str | None, status: ReferralStatus | str) -> str:
    """One line: why ``status`` may not follow ``current``, naming the allowed next statuses."""
    new = _status(status).value
    now = "no status yet" if current is None else _status(current).value
    allowed = allowed_next(current)
    if not allowed:
        return f"{new} refused after {now}: allowed next are none ({now} is final)"
    return f"{new} refused after {now}: allowed next are {', '.join(s.value for s in allowed)}"


def advance(
    current: ReferralStatus | str | None, status: ReferralStatus | str
) -> ReferralStatus | None:
    """The lifecycle state after ``status`` arrives in state ``current``; LifecycleError if not.

    A RECEIVED after the referral moved on is a late receipt: the state stays.
    DELAYED keeps the state. Anything else must be in the table.
    """
    new = _status(status)
    now = None if current is None else _status(current)
    if new is S.RECEIVED and now is not None:
        return now
    if new not in allowed_next(now):
        raise LifecycleError(now, new)
    if new is S.DELAYED:
        return now if now is not None else S.RECEIVED
    return new


def current_status(
    updates: Iterable[tuple[ReferralStatus | str, datetime]],
) -> tuple[ReferralStatus, datetime] | None:
    """The current status among ``(status, when)`` updates: highest stage, then latest.

    Arrival order does not matter: a RECEIVED that arrives after CLOSED leaves CLOSED
    current. DELAYED is never the current status (it is not a stage). None without any.
    """
    best: tuple[int, datetime, ReferralStatus] | None = None
    for raw, at in updates:
        status = _status(raw)
        stage = STAGE.get(status)
        if stage is None:
            continue
        if best is None or (stage, at) > (best[0], best[1]):
            best = (stage, at, status)
    return (best[2], best[1]) if best is not None else None


#: What a stored refusal reason may contain: a code, printable ASCII without spaces.
_REASON_CHARS = re.compile(r"[^\x21-\x7e]")
_REASON_MAX = 64


def reason_code(text: str | None) -> str:
    """``text`` as a reason code safe to store and print (``UNSPECIFIED`` if empty)."""
    code = _REASON_CHARS.sub("_", text or "")[:_REASON_MAX]
    return code or "UNSPECIFIED"
