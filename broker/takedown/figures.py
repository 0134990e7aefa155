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


@dataclass
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
    first_notice_ms: int | None = None
    action_ms: int | None = None
    notices: int = 0
    escalated: bool = False
    outcome: str | None = None
    outcome_ms: int = -1
    notice_kinds: dict[str, int] = field(default_factory=dict)


def _earliest(current: int | None, value: int) -> int:
    return value if current is None or value < current else current


def _apply(t: ItemTimes, f: TrailFact) -> None:
    step = f.step
    if step is TakedownStep.OPENED:
        t.opened_ms = _earliest(t.opened_ms, f.at_ms)
        t.provider, t.country, t.route, t.hotline = f.provider, f.country, f.route, f.actor
    elif step is TakedownStep.POLICE_INFORMED:
        t.police_ms = _earliest(t.police_ms, f.at_ms)
    elif step in (TakedownStep.NOTICE_SENT, TakedownStep.NOTICE_REPEATED, TakedownStep.ESCALATED):
        if step is not TakedownStep.ESCALATED:
            t.notices += 1
            t.first_notice_ms = _earliest(t.first_notice_ms, f.at_ms)
        else:
            t.escalated = True
        t.notice_kinds[step.value] = t.notice_kinds.get(step.value, 0) + 1
    if step in OUTCOMES:
        if step is TakedownStep.REMOVED:
            t.removals.append(f.at_ms)
        elif step is TakedownStep.STILL_ONLINE:
            t.still_online_ms = max(t.still_online_ms, f.at_ms)
        if f.to_party is not None and step is not TakedownStep.STILL_ONLINE:
            t.action_ms = _earliest(t.action_ms, f.at_ms)
        if f.at_ms >= t.outcome_ms:
            t.outcome, t.outcome_ms = step.value, f.at_ms


def removed_at(t: ItemTimes) -> int | None:
    """When the item was removed for good (see the module's definition; None: it was not)."""
    after = [at for at in t.removals if at >= t.still_online_ms]
    return min(after) if after else None


def item_times(facts: Iterable[TrailFact], since_ms: int | None = None) -> list[ItemTimes]:
    """Every opened item's times (opened at or after ``since_ms``, if given)."""
    items: dict[tuple[str, str], ItemTimes] = {}
    for f in facts:
        key = (f.referral_id, f.item_id)
        t = items.get(key)
        if t is None:
            t = items[key] = ItemTimes(f.item_id)
        _apply(t, f)
    return [
        t
        for t in items.values()
        if t.opened_ms is not None and (since_ms is None or t.opened_ms >= since_ms)
    ]


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _hours(ms: float | None) -> float | None:
    return None if ms is None else round(ms / _HOUR, 2)


def group_figures(items: list[ItemTimes]) -> dict[str, Any]:
    """The figures of one group of items (see the module's definitions)."""
    times = sorted(
        max(0, removed - t.opened_ms)
        for t in items
        if (removed := removed_at(t)) is not None and t.opened_ms is not None
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
        for kind, count in t.notice_kinds.items():
            row["notices"][kind] = row["notices"].get(kind, 0) + count
        action = t.outcome if t.action_ms is not None else "NO_ACTION"
        row["actions"][action] = row["actions"].get(action, 0) + 1
        if t.action_ms is not None:
            waits.setdefault(t.provider, []).append(max(0, t.action_ms - t.first_notice_ms))
    for provider, values in waits.items():
        by_provider[provider]["median_hours_to_action"] = _hours(statistics.median(values))
    return {"providers": dict(sorted(by_provider.items()))}
