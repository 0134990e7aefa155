"""What a member's surfaces show of known content: per referral, its items known before."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from broker.config import Settings
from broker.ids import short_id
from broker.known.index import MatchIndex, PreviouslyAssessed
from broker.receiver.inbox import Inbox, Received

__all__ = ["inbox_marks", "item_marks", "mark_lines", "referral_marks"]


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
