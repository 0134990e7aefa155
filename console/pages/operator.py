"""The operator's pages: flows, a case's trace, dead letters and replays, the ledger."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from broker.operator.since import parse_since
from console.svg import heat_map, swim_lanes
from console.web import Refused, form, guarded, need_operator, page

__all__ = [
    "ROUTES",
    "confirm_replay",
    "dead_letters",
    "flows_page",
    "flows_rows",
    "ledger",
    "replay",
    "trace_page",
]


def _since(request: Request) -> tuple[str, datetime | None]:
    text = request.query_params.get("since", "24h") or "24h"
    return text, parse_since(text, datetime.now(UTC), name="since")


async def flows_page(request: Request) -> Response:
    """Flows: heat map, handover times, overdue receipts."""
    desk = need_operator(request)
    text, since = _since(request)
    f = await run_in_threadpool(desk.flows, since)
    return page(
        request,
        "flows.html",
        flows=f,
        heat=heat_map(f),
        since=text,
        live="/operator/flows/rows?" + urllib.parse.urlencode({"since": text}),
    )


async def flows_rows(request: Request) -> Response:
    """The flows page's live part."""
    desk = need_operator(request)
    _, since = _since(request)
    f = await run_in_threadpool(desk.flows, since)
    return page(request, "flows_rows.html", flows=f, heat=heat_map(f))


async def trace_page(request: Request) -> Response:
    """One case's swim lanes (``?id=`` an id or prefix)."""
    desk = need_operator(request)
    given = request.query_params.get("id", "").strip()
    t = await run_in_threadpool(desk.trace, given) if given else None
    return page(
        request,
        "trace.html",
        trace=t,
        lanes=swim_lanes(t) if t is not None else None,
        given=given,
    )


async def dead_letters(request: Request) -> Response:
    """Every dead letter and every recorded replay."""
    desk = need_operator(request)
    rows = await run_in_threadpool(desk.dead_letters)
    replays = await run_in_threadpool(desk.replays)
    return page(
        request,
        "deadletters.html",
        rows=rows,
        replays=replays,
        done=request.query_params.get("done"),
    )


async def confirm_replay(request: Request) -> Response:
    """The confirmation form of one replay (it asks who replays)."""
    desk = need_operator(request)
    row = await run_in_threadpool(desk.dead_letter, request.query_params.get("id", ""))
    return page(request, "replay.html", row=row)


async def replay(request: Request) -> Response:
    """Replay a confirmed dead letter, recorded with who replayed it."""
    desk = need_operator(request)
    fields = await form(request)
    if fields.get("confirm") != "yes":
        raise Refused(400, "replay not confirmed")
    done = await run_in_threadpool(desk.replay, fields.get("id", ""), fields.get("by", ""))
    outcome = "replayed" if done.sent else f"skipped: {done.skipped}"
    return RedirectResponse(
        "/operator/deadletters?" + urllib.parse.urlencode({"done": f"{done.letter_id} {outcome}"}),
        status_code=303,
    )


async def ledger(request: Request) -> Response:
    """Ledger verification, topic counts and group lag."""
    desk = need_operator(request)
    result = await run_in_threadpool(desk.verification)
    topics = await run_in_threadpool(desk.topics)
    prefix = desk.settings.topic_prefix
    return page(request, "ledger.html", result=result, topics=topics, prefix=prefix)


ROUTES = [
    Route("/operator", guarded(flows_page)),
    Route("/operator/flows/rows", guarded(flows_rows)),
    Route("/operator/trace", guarded(trace_page)),
    Route("/operator/deadletters", guarded(dead_letters)),
    Route("/operator/deadletters/confirm", guarded(confirm_replay)),
    Route("/operator/deadletters/replay", guarded(replay), methods=["POST"]),
    Route("/operator/ledger", guarded(ledger)),
]
