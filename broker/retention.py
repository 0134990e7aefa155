"""Retention rules of the network file and which stored referrals they make due: pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Candidate", "Due", "Retention", "RetentionRule", "due"]

#: Outcomes a rule may name: a referral status the organisation reached or sent, or
#: ``NOT_ILLEGAL`` / ``REMOVED`` / ``NOT_FOUND`` when every item of the referral has it.
OUTCOMES = frozenset(
    {"RECEIVED", "ACCEPTED", "REJECTED", "REROUTED", "ASSESSED", "NTD_SENT", "REMOVED",
     "STILL_ONLINE", "REFERRED_TO_LE", "DELAYED", "CLOSED", "NOT_ILLEGAL", "NOT_FOUND"}
)  # fmt: skip
TLPS = frozenset({"CLEAR", "GREEN", "AMBER", "AMBER_STRICT", "RED"})


class RetentionRule(BaseModel):
    """One ``[[retention.rules]]`` entry: what it matches and how long that is kept."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Handling labels it applies to (none: every label).
    tlp: tuple[str, ...] = ()
    #: Outcomes it applies to (none: any), counted from when the outcome was reached.
    outcome: tuple[str, ...] = ()
    after_days: float = Field(gt=0, le=36500)

    def model_post_init(self, context: object) -> None:
        """Refuse labels and outcomes the network does not know (named, not quoted)."""
        bad = sorted(set(self.tlp) - TLPS) + sorted(set(self.outcome) - OUTCOMES)
        if bad:
            raise ValueError(f"unknown tlp or outcome {', '.join(bad)}")

    def matches(self, tlp: str, outcome: str | None) -> bool:
        """True if a referral of label ``tlp`` whose outcome is ``outcome`` falls under it."""
        if self.tlp and tlp not in self.tlp:
            return False
        return not self.outcome or outcome in self.outcome


class Retention(BaseModel):
    """The ``[retention]`` table: rules (first match wins) and the periodic review."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[RetentionRule, ...] = ()
    #: Everything kept is listed for review this often (0: never).
    review_months: int = Field(default=0, ge=0, le=120)
    #: How often a connector applies the rules to its own stores.
    check_hours: float = Field(default=24.0, gt=0, le=24 * 31)
    #: A recipient's encryption key is a new *period key* this often (0: never rotated);
    #: a period's key is destroyed once it ended ``longest_days`` ago.
    key_period_days: float = Field(default=0, ge=0, le=3660)
    #: An erasure destroys a period key no sooner than this long after the period ended
    #: (senders seal to the next key once they re-read the trust file).
    key_destroy_grace_seconds: float = Field(default=60.0, ge=0, le=86400)

    @property
    def longest_days(self) -> float | None:
        """The longest any rule keeps something (topic retention matches it); None: no rules."""
        return max((r.after_days for r in self.rules), default=None)


@dataclass(frozen=True)
class Candidate:
    """A stored referral as the rules see it: ids, label, outcome and times, no content."""

    origin_org: str
    referral_id: str
    tlp: str
    #: The outcome reached (a status sent, or every item's outcome), and when.
    outcome: str | None
    outcome_at: datetime | None
    stored_at: datetime


@dataclass(frozen=True)
class Due:
    """A stored referral the rules say must go, with the rule that says so."""

    candidate: Candidate
    rule: RetentionRule
    since: datetime


def due(candidates: Iterable[Candidate], retention: Retention, now: datetime) -> list[Due]:
    """The candidates whose first matching rule's time has passed at ``now``."""
    out = []
    for c in candidates:
        rule = next((r for r in retention.rules if r.matches(c.tlp, c.outcome)), None)
        if rule is None:
            continue
        start = c.outcome_at if rule.outcome and c.outcome_at is not None else c.stored_at
        if now >= start + timedelta(days=rule.after_days):
            out.append(Due(c, rule, start))
    return out
