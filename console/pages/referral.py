"""The liaison's referral page: envelope, items, history; reveal and status actions."""

from __future__ import annotations

import urllib.parse

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from broker.errors import ConfigError
from broker.wire.models import ItemOutcomeKind, ReferralStatus
from console.liaison import ITEM_OUTCOMES
from console.web import form, guarded, need_org, page

__all__ = ["ROUTES", "referral", "reveal", "status"]


async def referral(request: Request) -> Response:
    """One referral without its content."""
    desk = need_org(request)
    view = await run_in_threadpool(desk.referral, request.path_params["rid"])
    return page(
        request,
        "referral.html",
        view=view,
        outcomes=ITEM_OUTCOMES,
        sent=request.query_params.get("sent"),
    )


async def reveal(request: Request) -> Response:
    """The referral with its content (a restricted one needs a reason, recorded)."""
    desk = need_org(request)
    fields = await form(request)
    view = await run_in_threadpool(
        desk.reveal, request.path_params["rid"], fields.get("reason", "")
    )
    return page(request, "referral.html", view=view, outcomes=ITEM_OUTCOMES, sent=None)


async def status(request: Request) -> Response:
    """Send a status update (or one item's outcome), then back to the referral."""
    desk = need_org(request)
    fields = await form(request)
    rid = request.path_params["rid"]
    item_id = fields.get("item_id") or None
    try:
        new = ReferralStatus(fields["status"]) if fields.get("status") else None
        outcome = ItemOutcomeKind(fields["outcome"]) if fields.get("outcome") else None
    except ValueError:
        raise ConfigError("unknown status or outcome") from None
    update = await run_in_threadpool(
        lambda: desk.send_status(
            rid,
            new,
            note=fields.get("note"),
            reason_code=fields.get("reason_code"),
            destination=fields.get("destination"),
            item_id=item_id,
            outcome=outcome,
            moved_to=fields.get("moved_to", "").strip() or None,
        )
    )
    sent = update.status.value if item_id is None else f"{outcome} for one item"
    return RedirectResponse(
        f"/referral/{update.referral_id}?" + urllib.parse.urlencode({"sent": sent}),
        status_code=303,
    )


ROUTES = [
    Route("/referral/{rid}", guarded(referral)),
    Route("/referral/{rid}/reveal", guarded(reveal), methods=["POST"]),
    Route("/referral/{rid}/status", guarded(status), methods=["POST"]),
]
