"""The removal figures, computed from trail facts alone (so anyone holding the ledger can).

Per item: time to removal = its first ``REMOVED`` at or after its last
``STILL_ONLINE`` (a re-check that found it back undoes earlier removals) − its
``OPENED`` (clipped at 0); an item whose last outcome is ``STILL_ONLINE`` is not removed;
reported to police within 3 days = a ``POLICE_INFORMED`` at most 72 h after
``OPENED``. Per group of items (all; by provider, hosting country, route and
hotline — the attributes of the item's ``OPENED``): ``items``; ``removed``;
``median_hours`` (the median of the removal times; the mean of the middle two
for an even count) and ``p90_hours`` (nearest rank: the ⌈0.9·n⌉-th smallest),
both in hours rounded to 0.01; ``removed_within_2_5d`` / ``_3d`` / ``_7d`` and
``police_within_3d`` as a percentage of the group's items, rounded to 0.1;
``notices`` (first notices and repeats), ``escalated``, and the items whose last
outcome is ``not_illegal``, ``moved`` or ``still_online``. Items without an
``OPENED`` (or opened before ``since``) are not counted.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from broker.takedown.trail import OUTCOMES, TakedownStep, TrailFact

__all__ = [
    "GROUPS",
    "ItemTimes",
    "art22_report",
    "group_figures",
    "item_times",
    "removed_at",
    "summarise",
]

_HOUR = 3_600_000
_DAY = 24 * _HOUR
#: The breakdowns, by the name of the item attribute they group on.
GROUPS = ("provider", "country", "route", "hotline")


@dataclass(slots=True)
class ItemTimes:
    """What the trail says of one item."""

    item_id: str
    opened_ms: int | None = None
    provider: str = ""
    country: str = ""
    route: str = ""
    hotline: str = ""
    police_ms: int | None = None
    removals: list[int] = field(default_factory=list)
    still_online_ms: int = -1
    #: set by :func:`item_times`: :func:`removed_at`
    removed_ms: int | None = None
    first_notice_ms: int | None = None
    action_ms: int | None = None
    notices: int = 0
    escalated: bool = False
    outcome: str | None = None
    outcome_ms: int = -1
    repeats: int = 0
    escalations: int = 0

    def notice_kinds(self) -> dict[str, int]:
        """Notices of each kind sent about the item (first, repeats, escalations)."""
        kinds = {_SENT.value: self.notices - self.repeats, _REPEATED.value: self.repeats}
        kinds[_ESCALATED.value] = self.escalations
        return {k: v for k, v in kinds.items() if v}


_OPENED, _POLICE = TakedownStep.OPENED, TakedownStep.POLICE_INFORMED
_SENT, _REPEATED, _ESCALATED = (
    TakedownStep.NOTICE_SENT,
    TakedownStep.NOTICE_REPEATED,
    TakedownStep.ESCALATED,
)
_REMOVED, _STILL_ONLINE = TakedownStep.REMOVED, TakedownStep.STILL_ONLINE
_NOTICES = frozenset({_SENT, _REPEATED, _ESCALATED})


def _apply(t: ItemTimes, step: TakedownStep, f: TrailFact) -> None:
    """Fold one step other than an opening or a police report into the item's times."""
    at = f.at_ms
    if step in _NOTICES:
        if step is _ESCALATED:
            t.escalated = True
            t.escalations += 1
        else:
            t.notices += 1
            if step is _REPEATED:
                t.repeats += 1
            if t.first_notice_ms is None or at < t.first_notice_ms:
                t.first_notice_ms = at
    elif step in OUTCOMES:
        if step is _REMOVED:
            t.removals.append(at)
        elif step is _STILL_ONLINE:
            t.still_online_ms = max(t.still_online_ms, at)
        answered = f.to_party is not None and step is not _STILL_ONLINE
        if answered and (t.action_ms is None or at < t.action_ms):
            t.action_ms = at
        if at >= t.outcome_ms:
            t.outcome, t.outcome_ms = step.value, at


def removed_at(t: ItemTimes) -> int | None:
    """When the item was removed for good (see the module's definition; None: it was not)."""
    after = [at for at in t.removals if at >= t.still_online_ms]
    return min(after) if after else None


def item_times(facts: Iterable[TrailFact], since_ms: int | None = None) -> list[ItemTimes]:
    """Every opened item's times (opened at or after ``since_ms``, if given)."""
    items: dict[tuple[str, str], ItemTimes] = {}
    get = items.get
    for f in facts:  # the two commonest steps inline: a million events in seconds
        key = (f[1], f[4])
        t = get(key)
        if t is None:
            t = items[key] = ItemTimes(f[4])
        step, at = f[3], f[9]
        if step is _OPENED:
            if t.opened_ms is None or at < t.opened_ms:
                t.opened_ms = at
            t.provider, t.country, t.route, t.hotline = f[5], f[6], f[7], f[2]
        elif step is _POLICE:
            if t.police_ms is None or at < t.police_ms:
                t.police_ms = at
        else:
            _apply(t, step, f)
    out = [
        t
        for t in items.values()
        if t.opened_ms is not None and (since_ms is None or t.opened_ms >= since_ms)
    ]
    for t in out:
        t.removed_ms = removed_at(t)
    return out


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _hours(ms: float | None) -> float | None:
    return None if ms is None else round(ms / _HOUR, 2)


def group_figures(items: list[ItemTimes]) -> dict[str, Any]:
    """The figures of one group of items (see the module's definitions)."""
    times = sorted(
        max(0, t.removed_ms - t.opened_ms)
        for t in items
        if t.removed_ms is not None and t.opened_ms is not None
    )
    n = len(items)
    police = sum(
        1
        for t in items
        if t.police_ms is not None
        and t.opened_ms is not None
        and t.police_ms - t.opened_ms <= 3 * _DAY
    )
    return {
        "items": n,
        "removed": len(times),
        "median_hours": _hours(statistics.median(times)) if times else None,
        "p90_hours": _hours(times[-(-9 * len(times) // 10) - 1]) if times else None,
        "removed_within_2_5d": _pct(sum(1 for x in times if x <= 2.5 * _DAY), n),
        "removed_within_3d": _pct(sum(1 for x in times if x <= 3 * _DAY), n),
        "removed_within_7d": _pct(sum(1 for x in times if x <= 7 * _DAY), n),
        "police_within_3d": _pct(police, n),
        "notices": sum(t.notices for t in items),
        "escalated": sum(1 for t in items if t.escalated),
        "not_illegal": sum(1 for t in items if t.outcome == "NOT_ILLEGAL"),
        "moved": sum(1 for t in items if t.outcome == "MOVED"),
        "still_online": sum(1 for t in items if t.outcome == "STILL_ONLINE"),
    }


def summarise(facts: Iterable[TrailFact], since_ms: int | None = None) -> dict[str, Any]:
    """All figures: ``overall`` and one table per breakdown in :data:`GROUPS` (``by_<group>``)."""
    items = item_times(facts, since_ms)
    out: dict[str, Any] = {"overall": group_figures(items)}
    for group in GROUPS:
        buckets: dict[str, list[ItemTimes]] = {}
        for t in items:
            buckets.setdefault(str(getattr(t, group)), []).append(t)
        out[f"by_{group}"] = {k: group_figures(v) for k, v in sorted(buckets.items())}
    return out


def art22_report(facts: Iterable[TrailFact], since_ms: int | None = None) -> dict[str, Any]:
    """A trusted flagger's DSA Art. 22 report: notices by provider, type and action taken.

    Counts only — ids of providers, never an item, URL or person. ``median_hours_to_action``:
    from an item's first notice to the provider's answered outcome.
    """
    by_provider: dict[str, dict[str, Any]] = {}
    waits: dict[str, list[int]] = {}
    for t in item_times(facts, since_ms):
        if t.first_notice_ms is None:
            continue
        row = by_provider.setdefault(
            t.provider,
            {"items_notified": 0, "notices": {}, "actions": {}, "median_hours_to_action": None},
        )
        row["items_notified"] += 1
        for kind, count in t.notice_kinds().items():
            row["notices"][kind] = row["notices"].get(kind, 0) + count
        action = t.outcome if t.action_ms is not None else "NO_ACTION"
        row["actions"][action] = row["actions"].get(action, 0) + 1
        if t.action_ms is not None:
            waits.setdefault(t.provider, []).append(max(0, t.action_ms - t.first_notice_ms))
    for provider, values in waits.items():
        by_provider[provider]["median_hours_to_action"] = _hours(statistics.median(values))
    return {"providers": dict(sorted(by_provider.items()))}
