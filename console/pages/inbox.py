"""The liaison's inbox pages: the inbox (its live rows, its CSV) and what was sent."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from broker.known.views import HIDE_HINT, item_counts, known_only, referral_marks
from broker.operator.since import parse_since
from broker.receiver.inbox_view import to_csv
from console.liaison import LiaisonDesk
from console.web import form, guarded, need_org, page

__all__ = [
    "KNOWN_COOKIE",
    "ROUTES",
    "hides_known",
    "inbox",
    "inbox_csv",
    "inbox_rows",
    "known_view",
    "sent",
]

#: The liaison's choice to hide content assessed before from view (``hide``; absent: shown).
KNOWN_COOKIE = "referral_known"


def _inbox_query(request: Request) -> dict[str, Any]:
    q = request.query_params
    since = q.get("since", "all") or "all"
    return {
        "search": q.get("q", "").strip() or None,
        "since_text": since,
        "since": parse_since(since, datetime.now(UTC), name="since"),
        "unacknowledged": q.get("unack") == "1",
        "overdue": q.get("overdue") == "1",
    }


async def _inbox_items(request: Request) -> tuple[LiaisonDesk, dict[str, Any], list[Any]]:
    """The liaison's desk, the inbox query of ``request`` and what it finds."""
    desk = need_org(request)
    query = _inbox_query(request)
    items = await run_in_threadpool(
        desk.inbox,
        search=query["search"],
        since=query["since"],
        unacknowledged=query["unacknowledged"],
        overdue=query["overdue"],
    )
    return desk, query, items


def hides_known(request: Request) -> bool:
    """True if the liaison chose to hide content assessed before (:data:`KNOWN_COOKIE`)."""
    return request.cookies.get(KNOWN_COOKIE) == "hide"


def _marked(
    desk: LiaisonDesk, items: list[Any], hide: bool
) -> tuple[dict[str, list[Any]], set[str]]:
    rids = [e.referral_id for e in items]
    marks = referral_marks(desk.settings, desk.org, rids)
    if not hide:
        return marks, set()
    counts = item_counts(desk.settings, desk.org, [(e.origin_org, e.referral_id) for e in items])
    return marks, known_only(marks, counts)


async def _known(request: Request, desk: LiaisonDesk, items: list[Any]) -> dict[str, Any]:
    """Known content (issue 24): per referral listed, its items another member assessed;
    with the liaison's choice to hide them, the referrals of known content only left out."""
    hide = hides_known(request)
    marks, hidden = await run_in_threadpool(_marked, desk, items, hide)
    shown = [e for e in items if e.referral_id not in hidden]
    return {
        "items": shown,
        "marks": marks,
        "hide_known": hide,
        "hidden": len(hidden),
        "hint": HIDE_HINT,
    }


async def inbox(request: Request) -> Response:
    """The organisation's inbox, filtered by the query."""
    desk, query, items = await _inbox_items(request)
    return page(
        request,
        "inbox.html",
        **await _known(request, desk, items),
        query=query,
        live="/inbox/rows?" + request.url.query if request.url.query else "/inbox/rows",
        csv="/inbox.csv?" + request.url.query if request.url.query else "/inbox.csv",
        here="/inbox?" + request.url.query if request.url.query else "/inbox",
        now=datetime.now(UTC),
    )


async def inbox_rows(request: Request) -> Response:
    """The inbox's live table."""
    desk, _, items = await _inbox_items(request)
    return page(request, "inbox_rows.html", **await _known(request, desk, items), here="/inbox")


async def known_view(request: Request) -> Response:
    """The liaison's choice: hide content assessed before from view, or show it; then back."""
    need_org(request)
    fields = await form(request)
    back = urllib.parse.urlsplit(fields.get("back", ""))
    local = not back.scheme and not back.netloc and back.path.startswith("/")
    where = urllib.parse.urlunsplit(("", "", back.path, back.query, "")) if local else "/inbox"
    response = RedirectResponse(where, status_code=303)
    if fields.get("hide") == "1":
        response.set_cookie(
            KNOWN_COOKIE, "hide", max_age=400 * 86400, path="/", httponly=True, samesite="strict"
        )
    else:
        response.delete_cookie(KNOWN_COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def inbox_csv(request: Request) -> Response:
    """The inbox as CSV (as ``referral inbox --csv``)."""
    desk, _, items = await _inbox_items(request)
    return Response(
        to_csv(items),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="inbox-{desk.org}.csv"'},
    )


async def sent(request: Request) -> Response:
    """The referrals this organisation sent and what their recipients reported."""
    desk = need_org(request)
    rows = await run_in_threadpool(desk.sent)
    return page(request, "sent.html", rows=rows)


ROUTES = [
    Route("/inbox", guarded(inbox)),
    Route("/inbox/rows", guarded(inbox_rows)),
    Route("/inbox.csv", guarded(inbox_csv)),
    Route("/sent", guarded(sent)),
    Route("/known-view", guarded(known_view), methods=["POST"]),
]
