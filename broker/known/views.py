"""What a member's surfaces show of known content: per referral, its items known before."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from broker.config import Settings
from broker.ids import short_id
from broker.known.index import POSSIBLE, MatchIndex, PreviouslyAssessed
from broker.receiver.inbox import Inbox, Received

__all__ = [
    "HIDE_HINT",
    "hidden_items",
    "inbox_marks",
    "item_counts",
    "item_marks",
    "known_only",
    "mark_lines",
    "referral_marks",
    "stands",
]

#: What a liaison who hid known content is told (the referrals are still there).
HIDE_HINT = "holding only content assessed before"


def stands(hit: PreviouslyAssessed | Mapping[str, Any]) -> bool:
    """True for a mark that counts as assessed before (exact or a confirmed near-duplicate);
    a possible near-duplicate does not: only its holder can confirm it."""
    kind = hit.get("kind") if isinstance(hit, Mapping) else hit.kind
    return kind != POSSIBLE


def item_counts(
    settings: Settings, org: str, referrals: Iterable[tuple[str, str]]
) -> dict[str, int]:
    """Referral id → the items of its current version, for ``(origin, referral id)`` pairs."""
    path = settings.org_dir(org) / "inbox.sqlite3"
    if not path.exists():
        return {}
    inbox = Inbox(path)
    try:
        return {rid: len(inbox.item_ids(origin, rid)) for origin, rid in referrals}
    finally:
        inbox.close()


def known_only(marks: Mapping[str, Sequence[Any]], counts: Mapping[str, int]) -> set[str]:
    """The referrals every item of which stands as assessed before: what hiding known content
    hides (``marks``: :func:`inbox_marks` or :func:`referral_marks`)."""
    hidden = set()
    for rid, n in counts.items():
        marked = {_item(m) for m in marks.get(rid, ()) if stands(_hit(m))}
        if n and len(marked) >= n:
            hidden.add(rid)
    return hidden


def hidden_items(known: Mapping[str, PreviouslyAssessed]) -> set[str]:
    """The item ids of one referral that hiding known content leaves out."""
    return {item_id for item_id, hit in known.items() if stands(hit)}


def _item(mark: Any) -> str:
    return str(mark["item_id"] if isinstance(mark, Mapping) else mark[0])


def _hit(mark: Any) -> PreviouslyAssessed | Mapping[str, Any]:
    return mark if isinstance(mark, Mapping) else mark[1]  # type: ignore[no-any-return]


def inbox_marks(
    settings: Settings, org: str, inbox: Inbox, received: Iterable[Received]
) -> dict[str, list[dict[str, Any]]]:
    """Referral id → one ``previously_assessed`` object per item known before (holder's TLP
    applied); empty when the organisation has no match index."""
    path = settings.org_dir(org) / "known.sqlite3"
    if not path.exists():
        return {}
    index = MatchIndex(path)
    out: dict[str, list[dict[str, Any]]] = {}
    try:
        for r in received:
            for item_id in inbox.item_ids(r.origin_org, r.referral_id):
                hit = index.lookup(r.referral_id, item_id)
                if hit is not None:
                    entry = {"item_id": item_id, **hit.to_json(), "text": hit.line()}
                    out.setdefault(r.referral_id, []).append(entry)
    finally:
        index.close()
    return out


def mark_lines(marks: dict[str, list[dict[str, Any]]], referral_ids: Iterable[str]) -> list[str]:
    """One line per known item of the listed referrals, for people."""
    return [
        f"{short_id(rid)} item {short_id(str(m['item_id']))}: {m['text']}"
        for rid in referral_ids
        for m in marks.get(rid, ())
    ]


def referral_marks(
    settings: Settings, org: str, referral_ids: Iterable[str]
) -> dict[str, list[tuple[str, PreviouslyAssessed]]]:
    """Referral id → ``(item id, earlier holder)`` of each of its items known before, in the
    order tokenised; empty when ``org`` has no match index."""
    path = settings.org_dir(org) / "known.sqlite3"
    if not path.exists():
        return {}
    index = MatchIndex(path)
    out: dict[str, list[tuple[str, PreviouslyAssessed]]] = {}
    try:
        for rid in dict.fromkeys(referral_ids):
            items = dict.fromkeys(t.item_id for t in index.own_tokens([rid]))
            for item_id in items:
                hit = index.lookup(rid, item_id)
                if hit is not None:
                    out.setdefault(rid, []).append((item_id, hit))
    finally:
        index.close()
    return out


def item_marks(settings: Settings, org: str, referral_id: str) -> dict[str, PreviouslyAssessed]:
    """Item id → its earlier holder, for the items of one referral known before."""
    return dict(referral_marks(settings, org, [referral_id]).get(referral_id, ()))
