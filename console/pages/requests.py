"""The liaison's Requests view: police requests asked of this SPOC and by it, due soon first.

Reads the SPOC's own request store (:mod:`broker.requests.store`) only: ids,
case, counterpart, urgency, state, limit, delay reason, overdue — never the
request's or answer's content. ``referral request watch`` keeps it current.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.requests.store import RequestRow, RequestStore
from console.web import guarded, need_org, page

__all__ = ["ROUTES", "request_rows", "requests_page"]


def request_rows(path: str) -> tuple[list[RequestRow], list[RequestRow]]:
    """(asked of me, asked by me) from the store at ``path``, due soon first; none without one."""
    if not Path(path).is_file():
        return [], []
    store = RequestStore(Path(path))
    try:
        return store.rows("of_me"), store.rows("by_me")
    finally:
        store.close()


def _when(ms: int | None) -> str:
    return "–" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


async def requests_page(request: Request) -> Response:
    """Requests asked of the organisation and by it."""
    desk = need_org(request)
    path = str(desk.settings.org_dir(desk.org) / "requests.sqlite3")
    of_me, by_me = await run_in_threadpool(request_rows, path)
    return page(request, "requests.html", of_me=of_me, by_me=by_me, when=_when)


ROUTES = [Route("/requests", guarded(requests_page))]
