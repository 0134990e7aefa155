"""The liaison's referral page: envelope, items, history; reveal and status actions.

A referral is (origin, referral id): another member may publish under the same
id, so every page and action names the origin (``/referral/{origin}/{id}``);
``/referral/{id}`` leads to it, or lists the origins when several used the id.
"""

from __future__ import annotations

import urllib.parse

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from broker.errors import ConfigError
from broker.known.views import hidden_items, item_marks
from broker.lifecycle import FINAL
from broker.wire.models import ItemOutcomeKind, ReferralStatus
from console.liaison import ITEM_OUTCOMES
from console.pages.inbox import hides_known
from console.web import form, guarded, need_org, page

__all__ = ["ROUTES", "choose", "referral", "reveal", "status"]


def _path(origin: str, rid: str) -> str:
    q = urllib.parse.quote
    return f"/referral/{q(origin, safe='')}/{q(rid, safe='')}"


async def choose(request: Request) -> Response:
    """A referral named by id (or prefix) alone: to its page, or the origins that used it."""
    desk = need_org(request)
    rid, origins = await run_in_threadpool(desk.origins, request.path_params["rid"])
    if len(origins) == 1:
        return RedirectResponse(_path(origins[0], rid), status_code=303)
    if not origins:
        raise ConfigError(f"{desk.org} has not received referral {rid}")
    links = [(o, _path(o, rid)) for o in origins]
    return page(request, "referral_origins.html", 300, rid=rid, links=links)


async def referral(request: Request) -> Response:
    """One referral of one origin, without its content."""
    desk = need_org(request)
    p = request.path_params
    view = await run_in_threadpool(lambda: desk.referral(p["rid"], origin=p["origin"]))
    known = await run_in_threadpool(item_marks, desk.settings, desk.org, p["rid"])
    return page(
        request,
        "referral.html",
        view=view,
        outcomes=ITEM_OUTCOMES,
        sent=request.query_params.get("sent"),
        known=known,
        hidden=hidden_items(known) if hides_known(request) else set(),
    )


async def reveal(request: Request) -> Response:
    """The referral with its content (a restricted one needs a reason, recorded)."""
    desk = need_org(request)
    fields = await form(request)
    p = request.path_params
    view = await run_in_threadpool(
        lambda: desk.reveal(p["rid"], fields.get("reason", ""), origin=p["origin"])
    )
    known = await run_in_threadpool(item_marks, desk.settings, desk.org, p["rid"])
    hidden = hidden_items(known) if hides_known(request) else set()
    return page(
        request,
        "referral.html",
        view=view,
        outcomes=ITEM_OUTCOMES,
        sent=None,
        known=known,
        hidden=hidden,
    )


async def status(request: Request) -> Response:
    """Send a status update (or one item's outcome) to the referral's origin, then back."""
    desk = need_org(request)
    fields = await form(request)
    p = request.path_params
    item_id = fields.get("item_id") or None
    try:
        new = ReferralStatus(fields["status"]) if fields.get("status") else None
        outcome = ItemOutcomeKind(fields["outcome"]) if fields.get("outcome") else None
    except ValueError:
        raise ConfigError("unknown status or outcome") from None
    if new in FINAL and item_id is None and fields.get("confirm") != "yes":
        return await _confirm(request, new, fields)
    update = await run_in_threadpool(
        lambda: desk.send_status(
            p["rid"],
            new,
            note=fields.get("note"),
            reason_code=fields.get("reason_code"),
            destination=fields.get("destination"),
            item_id=item_id,
            outcome=outcome,
            moved_to=fields.get("moved_to", "").strip() or None,
            origin=p["origin"],
        )
    )
    sent = update.status.value if item_id is None else f"{outcome} for one item"
    return RedirectResponse(
        _path(update.origin_org, update.referral_id) + "?" + urllib.parse.urlencode({"sent": sent}),
        status_code=303,
    )


#: The fields of a status form a confirmation carries over to its second step.
_CARRIED = ("status", "destination", "reason_code", "note")


async def _confirm(request: Request, new: ReferralStatus, fields: dict[str, str]) -> Response:
    """A final status asks first: a page whose form sends it (confirm=yes), or goes back."""
    p = request.path_params
    carried = {k: fields[k] for k in _CARRIED if fields.get(k)}
    return page(
        request,
        "confirm_status.html",
        here=_path(p["origin"], p["rid"]),
        rid=p["rid"],
        final=new.value,
        fields=carried,
    )


ROUTES = [
    Route("/referral/{rid}", guarded(choose)),
    Route("/referral/{origin}/{rid}", guarded(referral)),
    Route("/referral/{origin}/{rid}/reveal", guarded(reveal), methods=["POST"]),
    Route("/referral/{origin}/{rid}/status", guarded(status), methods=["POST"]),
]
