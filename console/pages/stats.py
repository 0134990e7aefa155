"""The Stats page: takedown figures from the signed ledger (as ``referral stats``), with charts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.operator.since import parse_since
from broker.takedown.figures import GROUPS
from broker.takedown.stats import store_figures
from console import ledger
from console.charts import removal_bars, share_bars
from console.web import guarded, need_operator, page

__all__ = ["ROUTES", "stats_page"]


def _figures(desk: Any, since_ms: int | None) -> dict[str, Any]:
    path = ledger.synced_path(desk.settings, desk.codec)
    return store_figures(path, since_ms)


async def stats_page(request: Request) -> Response:
    """Time to removal and reporting to police, by provider, country, route and hotline."""
    desk = need_operator(request)
    text = request.query_params.get("since", "all") or "all"
    start = parse_since(text, datetime.now(UTC), name="since")
    since_ms = None if start is None else int(start.timestamp() * 1000)
    figures = await run_in_threadpool(_figures, desk, since_ms)
    return page(
        request,
        "stats.html",
        figures=figures,
        groups=GROUPS,
        since=text,
        removal=removal_bars(figures["by_provider"]),
        shares=share_bars(figures["by_country"]),
    )


ROUTES = [Route("/operator/stats", guarded(stats_page))]
