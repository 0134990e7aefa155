"""The origin's side of item outcomes: what recipients reported of the referrals it sent.

Read from the origin's own stores (outbox, status log); `referral outbox` and the Sent page show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.origin.outbox import Outbox
from broker.origin.status_log import ItemState, StatusLog
from broker.outcomes import summarise

__all__ = ["SentChild", "SentItems", "item_report"]


@dataclass(frozen=True)
class SentChild:
    """A child referral the origin re-referred a moved item in."""

    referral_id: str
    item_id: str
    country: str
    #: False while it is queued (not yet published).
    published: bool


@dataclass(frozen=True)
class SentItems:
    """The verified item outcomes of one sent referral (latest per item) and its children."""

    summary: str
    outcomes: tuple[ItemState, ...]
    children: tuple[SentChild, ...]

    def to_json(self) -> dict[str, Any]:
        """The ``items`` / ``item_outcomes`` / ``children`` keys of ``referral outbox --json``."""
        return {
            "items": self.summary,
            "item_outcomes": [
                {
                    "item_id": s.item_id,
                    "reported_by": s.emitter,
                    "outcome": s.outcome.outcome.value,
                    "observed_at": s.outcome.observed_at.isoformat(),
                    "moved_to": s.outcome.hosting.country if s.outcome.hosting else None,
                }
                for s in self.outcomes
            ],
            "children": [
                {
                    "referral_id": c.referral_id,
                    "item_id": c.item_id,
                    "country": c.country,
                    "published": c.published,
                }
                for c in self.children
            ],
        }


def item_report(box: Outbox, status_log: StatusLog, referral_id: str) -> SentItems:
    """What the recipients reported of the items of ``referral_id`` and its re-referrals."""
    entry = box.get(referral_id)
    latest: dict[str, ItemState] = {}
    for state in status_log.item_states(referral_id):  # oldest first: the latest report wins
        latest[state.item_id] = state
    total = len(entry.items) if entry is not None and entry.items else None
    return SentItems(
        summary=summarise([s.outcome for s in latest.values()], total),
        outcomes=tuple(latest.values()),
        children=tuple(
            SentChild(r.child_referral_id, r.item_id, r.country, published)
            for r, published in box.children(referral_id)
        ),
    )
