"""What a member's surfaces show of known content: per referral, its items known before."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from broker.config import Settings
from broker.ids import short_id
from broker.known.index import MatchIndex
from broker.receiver.inbox import Inbox, Received

__all__ = ["inbox_marks", "mark_lines"]


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
