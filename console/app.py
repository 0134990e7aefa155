"""The console's web application: routes, sessions, CSRF and security headers.

Server-rendered HTML (Jinja2, autoescaped, every control character made
visible), charts as inline SVG (:mod:`console.svg`), one small static script
that refreshes the live parts (no inline script or style: the CSP is
``default-src 'self'``). Every response carries the security headers; every
page but the static files is ``Cache-Control: no-store``.

=========================  ======================================================
path                        what
=========================  ======================================================
``/login`` ``/logout``      the token form; a session cookie (HttpOnly, Strict)
``/inbox``                  the organisation's inbox (``rows``: the live table)
``/inbox.csv``              the inbox as CSV (as ``referral inbox --csv``)
``/referral/{id}``          envelope, items, history, status actions, reveal
``/operator``               flows: heat map, handover times, overdue receipts
``/operator/trace``         one case's swim lanes (``?id=`` an id or prefix)
``/operator/deadletters``   dead letters, replay with confirmation
``/operator/ledger``        ledger verification, topic counts and group lag
=========================  ======================================================
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from broker.errors import ConfigError, ReferralError, UnknownReferral, ValidationFailed
from broker.ids import short_id
from broker.lifecycle import LifecycleError
from broker.terminal import escape as visible
from broker.wire.models import ItemOutcomeKind, ReferralStatus
from cli.operator_cmd import parse_since
from connectors.inbox_view import to_csv
from console.auth import SESSION_COOKIE, Principal, Sessions, Tokens
from console.liaison import ITEM_OUTCOMES, LiaisonDesk
from console.operator import OperatorDesk
from console.svg import heat_map, swim_lanes
from console.throttle import LoginThrottle

__all__ = ["CONTENT_SECURITY_POLICY", "Console", "build_app"]

#: No inline script or style, no framing, forms only to this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: Largest form body accepted (bytes).
MAX_FORM_BYTES = 16 * 1024

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def _finalize(value: Any) -> Any:
    """Every text a template prints has its control characters made visible (then escaped)."""
    if isinstance(value, Markup) or not isinstance(value, str):
        return "" if value is None else value
    return visible(value)


def _when(at: datetime | float | None) -> str:
    if at is None:
        return ""
    if not isinstance(at, datetime):
        at = datetime.fromtimestamp(float(at), UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


@dataclass
class Console:
    """What the application serves: the organisation's desk (if any) and the operator's."""

    tokens: Tokens
    liaison: LiaisonDesk | None
    operator: OperatorDesk
    sessions: Sessions
    #: Failed logins by client address: slowed down, then locked out.
    throttle: LoginThrottle = field(default_factory=LoginThrottle)

    @property
    def org(self) -> str | None:
        """The organisation whose view this console serves (None: operator only)."""
        return self.liaison.org if self.liaison is not None else None


class _Refused(Exception):
    """A request refused before anything happened (status code and a short message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def build_app(console: Console, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The Starlette application of ``console``.

    ``allowed_hosts`` (``Host`` header values; None: any) keeps a page elsewhere from
    reaching a loopback console through a name that resolves to it (DNS rebinding).
    """
    env = Environment(
        loader=PackageLoader("console", "templates"),
        autoescape=True,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["seconds"] = _seconds
    env.filters["short"] = short_id
    prefix = console.operator.settings.topic_prefix
    env.filters["topic"] = lambda name: (
        name[len(prefix) :]
        if prefix and isinstance(name, str) and name.startswith(prefix)
        else name
    )
    sessions = console.sessions

    class Guard(BaseHTTPMiddleware):
        """Session cookie for every visitor; security headers on every response."""

        async def dispatch(
            self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            sid = request.cookies.get(SESSION_COOKIE)
            fresh = None
            if not sessions.known(sid):
                sid = fresh = sessions.new()
            request.state.sid = sid
            response = await call_next(request)
            for k, v in _HEADERS.items():
                response.headers[k] = v
            if not request.url.path.startswith("/static/"):
                response.headers["Cache-Control"] = "no-store"
            if fresh is not None and "set-cookie" not in response.headers:
                _set_cookie(response, fresh)
            return response

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        sid = request.state.sid
        principal = sessions.principal(sid)
        html = env.get_template(name).render(
            csrf=sessions.csrf(sid),
            principal=principal,
            org=console.org,
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    def who(request: Request) -> Principal | None:
        return sessions.principal(request.state.sid)

    def need_org(request: Request) -> LiaisonDesk:
        p = who(request)
        if console.liaison is None or p is None or p.id != console.liaison.org:
            raise _Refused(401, "log in with this organisation's token")
        return console.liaison

    def need_operator(request: Request) -> OperatorDesk:
        p = who(request)
        if p is None or not p.is_operator:
            raise _Refused(401, "log in with the operator's token")
        return console.operator

    async def form(request: Request) -> dict[str, str]:
        """The urlencoded form, after the CSRF check (403 without the session's token)."""
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise _Refused(413, "form too large")
        fields = {
            k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items() if v
        }
        if not sessions.check_csrf(request.state.sid, fields.get("csrf")):
            raise _Refused(403, "refused: the form's CSRF token is missing or wrong")
        return fields

    def refused(request: Request, exc: _Refused) -> Response:
        if exc.status == 401 and request.method == "GET" and "/rows" not in request.url.path:
            return RedirectResponse("/login", status_code=303)
        return page(request, "error.html", exc.status, message=exc.message)

    def failed(request: Request, exc: ReferralError) -> Response:
        status = 404 if isinstance(exc, UnknownReferral) else 400
        if isinstance(exc, (LifecycleError, ValidationFailed)):
            status = 409
        lines = getattr(exc, "problems", None) or str(exc).splitlines()
        return page(request, "error.html", status, message="; ".join(lines))

    def handler(
        fn: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await fn(request)
            except _Refused as exc:
                return refused(request, exc)
            except ReferralError as exc:
                return failed(request, exc)

        return run

    # -- login ------------------------------------------------------------------------------------

    async def home(request: Request) -> Response:
        p = who(request)
        if p is None:
            return RedirectResponse("/login", status_code=303)
        return RedirectResponse("/operator" if p.is_operator else "/inbox", status_code=303)

    async def login_form(request: Request) -> Response:
        return page(request, "login.html", principals=console.tokens.principals)

    async def login(request: Request) -> Response:
        fields = await form(request)
        address = request.client.host if request.client is not None else "unknown"
        wait = console.throttle.wait(address)
        if wait > 0:
            refusal = page(
                request,
                "login.html",
                429,
                principals=console.tokens.principals,
                locked=math.ceil(wait),
            )
            refusal.headers["Retry-After"] = str(math.ceil(wait))
            return refusal
        principal = console.tokens.match(fields.get("token", ""))
        if principal is None:
            console.throttle.failed(address)
            return page(
                request, "login.html", 401, principals=console.tokens.principals, wrong=True
            )
        console.throttle.succeeded(address)
        sessions.end(request.state.sid)
        sid = sessions.new(principal)
        response = RedirectResponse(
            "/operator" if principal.is_operator else "/inbox", status_code=303
        )
        _set_cookie(response, sid)
        return response

    async def logout(request: Request) -> Response:
        await form(request)
        sessions.end(request.state.sid)
        response = RedirectResponse("/login", status_code=303)
        _set_cookie(response, sessions.new())
        return response

    # -- the liaison's pages ----------------------------------------------------------------------

    def _inbox_query(request: Request) -> dict[str, Any]:
        q = request.query_params
        since = q.get("since", "all") or "all"
        return {
            "search": q.get("q", "").strip() or None,
            "since_text": since,
            "since": parse_since(since, datetime.now(UTC)),
            "unacknowledged": q.get("unack") == "1",
            "overdue": q.get("overdue") == "1",
        }

    async def inbox_items(request: Request) -> tuple[LiaisonDesk, dict[str, Any], list[Any]]:
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

    async def inbox(request: Request) -> Response:
        _, query, items = await inbox_items(request)
        return page(
            request,
            "inbox.html",
            items=items,
            query=query,
            live="/inbox/rows?" + request.url.query if request.url.query else "/inbox/rows",
            csv="/inbox.csv?" + request.url.query if request.url.query else "/inbox.csv",
            now=datetime.now(UTC),
        )

    async def inbox_rows(request: Request) -> Response:
        _, _, items = await inbox_items(request)
        return page(request, "inbox_rows.html", items=items)

    async def inbox_csv(request: Request) -> Response:
        desk, _, items = await inbox_items(request)
        return Response(
            to_csv(items),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="inbox-{desk.org}.csv"'},
        )

    async def sent(request: Request) -> Response:
        desk = need_org(request)
        rows = await run_in_threadpool(desk.sent)
        return page(request, "sent.html", rows=rows)

    async def referral(request: Request) -> Response:
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
        desk = need_org(request)
        fields = await form(request)
        view = await run_in_threadpool(
            desk.reveal, request.path_params["rid"], fields.get("reason", "")
        )
        return page(request, "referral.html", view=view, outcomes=ITEM_OUTCOMES, sent=None)

    async def status(request: Request) -> Response:
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

    # -- the operator's pages ---------------------------------------------------------------------

    def _since(request: Request) -> tuple[str, datetime | None]:
        text = request.query_params.get("since", "24h") or "24h"
        return text, parse_since(text, datetime.now(UTC))

    async def flows_page(request: Request) -> Response:
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
        desk = need_operator(request)
        _, since = _since(request)
        f = await run_in_threadpool(desk.flows, since)
        return page(request, "flows_rows.html", flows=f, heat=heat_map(f))

    async def trace_page(request: Request) -> Response:
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
        desk = need_operator(request)
        row = await run_in_threadpool(desk.dead_letter, request.query_params.get("id", ""))
        return page(request, "replay.html", row=row)

    async def replay(request: Request) -> Response:
        desk = need_operator(request)
        fields = await form(request)
        if fields.get("confirm") != "yes":
            raise _Refused(400, "replay not confirmed")
        done = await run_in_threadpool(desk.replay, fields.get("id", ""), fields.get("by", ""))
        outcome = "replayed" if done.sent else f"skipped: {done.skipped}"
        return RedirectResponse(
            "/operator/deadletters?"
            + urllib.parse.urlencode({"done": f"{done.letter_id} {outcome}"}),
            status_code=303,
        )

    async def ledger(request: Request) -> Response:
        desk = need_operator(request)
        result = await run_in_threadpool(desk.verification)
        topics = await run_in_threadpool(desk.topics)
        prefix = console.operator.settings.topic_prefix
        return page(request, "ledger.html", result=result, topics=topics, prefix=prefix)

    routes = [
        Route("/", handler(home)),
        Route("/login", handler(login_form), methods=["GET"]),
        Route("/login", handler(login), methods=["POST"]),
        Route("/logout", handler(logout), methods=["POST"]),
        Route("/inbox", handler(inbox)),
        Route("/inbox/rows", handler(inbox_rows)),
        Route("/inbox.csv", handler(inbox_csv)),
        Route("/sent", handler(sent)),
        Route("/referral/{rid}", handler(referral)),
        Route("/referral/{rid}/reveal", handler(reveal), methods=["POST"]),
        Route("/referral/{rid}/status", handler(status), methods=["POST"]),
        Route("/operator", handler(flows_page)),
        Route("/operator/flows/rows", handler(flows_rows)),
        Route("/operator/trace", handler(trace_page)),
        Route("/operator/deadletters", handler(dead_letters)),
        Route("/operator/deadletters/confirm", handler(confirm_replay)),
        Route("/operator/deadletters/replay", handler(replay), methods=["POST"]),
        Route("/operator/ledger", handler(ledger)),
        Mount("/static", StaticFiles(packages=[("console", "static")]), name="static"),
    ]
    middleware = [Middleware(Guard)]
    if allowed_hosts is not None:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    return Starlette(routes=routes, middleware=middleware)


def _set_cookie(response: Response, sid: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, sid, httponly=True, samesite="strict", path="/", secure=False
    )
