"""The liaison's inbox pages: the inbox (its live rows, its CSV) and what was sent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.known.views import referral_marks
from broker.operator.since import parse_since
from broker.receiver.inbox_view import to_csv
from console.liaison import LiaisonDesk
from console.web import guarded, need_org, page

__all__ = ["ROUTES", "inbox", "inbox_csv", "inbox_rows", "sent"]


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


async def _marks(desk: LiaisonDesk, items: list[Any]) -> dict[str, list[Any]]:
    """Known content (issue 24): per referral listed, its items another member assessed."""
    rids = [e.referral_id for e in items]
    return await run_in_threadpool(referral_marks, desk.settings, desk.org, rids)


async def inbox(request: Request) -> Response:
    """The organisation's inbox, filtered by the query."""
    desk, query, items = await _inbox_items(request)
    return page(
        request,
        "inbox.html",
        items=items,
        marks=await _marks(desk, items),
        query=query,
        live="/inbox/rows?" + request.url.query if request.url.query else "/inbox/rows",
        csv="/inbox.csv?" + request.url.query if request.url.query else "/inbox.csv",
        now=datetime.now(UTC),
    )


async def inbox_rows(request: Request) -> Response:
    """The inbox's live table."""
    desk, _, items = await _inbox_items(request)
    return page(request, "inbox_rows.html", items=items, marks=await _marks(desk, items))


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
]
