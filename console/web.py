"""The console's web plumbing shared by every page: rendering, sessions, CSRF, refusals.

Every page handler reaches the console through :func:`web` (the application's state),
renders through :func:`page` (autoescaped, control characters made visible) and reads
forms only through :func:`form` (CSRF-checked); :class:`Guard` adds the security headers.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp

from broker.errors import ReferralError, UnknownReferral, ValidationFailed
from broker.ids import short_id
from broker.lifecycle import LifecycleError
from broker.terminal import escape as visible
from console.auth import SESSION_COOKIE, Principal, Sessions, Tokens
from console.liaison import LiaisonDesk
from console.operator import OperatorDesk
from console.throttle import LoginThrottle

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "MAX_FORM_BYTES",
    "Console",
    "Guard",
    "Handler",
    "Refused",
    "Web",
    "environment",
    "form",
    "guarded",
    "need_operator",
    "need_org",
    "page",
    "set_cookie",
    "web",
    "who",
]

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

#: A page handler: a request in, a response out.
Handler = Callable[[Request], Awaitable[Response]]


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


@dataclass(frozen=True)
class Web:
    """The console being served and its template environment (the application's state)."""

    console: Console
    env: Environment


class Refused(Exception):
    """A request refused before anything happened (status code and a short message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _finalize(value: Any) -> Any:
    """Every text a template prints has its control characters made visible (then escaped)."""
    if isinstance(value, Markup) or not isinstance(value, str):
        return "" if value is None else value
    return visible(value)


def _when(at: datetime | float | None) -> Markup:
    """The date and the time (UTC), each kept whole: at most two lines in a narrow column."""
    if at is None:
        return Markup("")
    if not isinstance(at, datetime):
        at = datetime.fromtimestamp(float(at), UTC)
    at = at.astimezone(UTC)
    return Markup('<span class="when"><span>{}</span> <span>{}</span></span>').format(
        at.strftime("%Y-%m-%d"), at.strftime("%H:%M:%S UTC")
    )


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


def environment(prefix: str) -> Environment:
    """The autoescaping template environment; the ``topic`` filter drops ``prefix``."""
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
    env.filters["topic"] = lambda name: (
        name[len(prefix) :]
        if prefix and isinstance(name, str) and name.startswith(prefix)
        else name
    )
    return env


def web(request: Request) -> Web:
    """The console this request is served by."""
    state: Web = request.app.state.web
    return state


def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    """Template ``name`` rendered for the request's session (its CSRF token, who is in)."""
    w = web(request)
    sid = request.state.sid
    sessions = w.console.sessions
    html = w.env.get_template(name).render(
        csrf=sessions.csrf(sid),
        principal=sessions.principal(sid),
        org=w.console.org,
        **ctx,
    )
    return HTMLResponse(html, status_code=status)


def who(request: Request) -> Principal | None:
    """Who is logged in on the request's session (None: nobody)."""
    return web(request).console.sessions.principal(request.state.sid)


def need_org(request: Request) -> LiaisonDesk:
    """The organisation's desk, for its own logged-in liaison only (else Refused 401)."""
    p = who(request)
    liaison = web(request).console.liaison
    if liaison is None or p is None or p.id != liaison.org:
        raise Refused(401, "log in with this organisation's token")
    return liaison


def need_operator(request: Request) -> OperatorDesk:
    """The operator's desk, for the logged-in operator only (else Refused 401)."""
    p = who(request)
    if p is None or not p.is_operator:
        raise Refused(401, "log in with the operator's token")
    return web(request).console.operator


async def form(request: Request) -> dict[str, str]:
    """The urlencoded form, after the CSRF check (403 without the session's token)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Refused(413, "form too large")
    fields = {
        k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items() if v
    }
    if not web(request).console.sessions.check_csrf(request.state.sid, fields.get("csrf")):
        raise Refused(403, "refused: the form's CSRF token is missing or wrong")
    return fields


def _refused(request: Request, exc: Refused) -> Response:
    if exc.status == 401 and request.method == "GET" and "/rows" not in request.url.path:
        return RedirectResponse("/login", status_code=303)
    return page(request, "error.html", exc.status, message=exc.message)


def _failed(request: Request, exc: ReferralError) -> Response:
    status = 404 if isinstance(exc, UnknownReferral) else 400
    if isinstance(exc, (LifecycleError, ValidationFailed)):
        status = 409
    lines = getattr(exc, "problems", None) or str(exc).splitlines()
    return page(request, "error.html", status, message="; ".join(lines))


def guarded(fn: Handler) -> Handler:
    """``fn`` with refusals and the library's errors shown as error pages (never a traceback)."""

    async def run(request: Request) -> Response:
        try:
            return await fn(request)
        except Refused as exc:
            return _refused(request, exc)
        except ReferralError as exc:
            return _failed(request, exc)

    return run


def set_cookie(response: Response, sid: str) -> None:
    """Set the session cookie (HttpOnly, SameSite Strict)."""
    response.set_cookie(
        SESSION_COOKIE, sid, httponly=True, samesite="strict", path="/", secure=False
    )


class Guard(BaseHTTPMiddleware):
    """Session cookie for every visitor; security headers on every response."""

    def __init__(self, app: ASGIApp, sessions: Sessions) -> None:
        super().__init__(app)
        self.sessions = sessions

    async def dispatch(self, request: Request, call_next: Handler) -> Response:
        """Give the request a session, then stamp the security headers on its response."""
        sid = request.cookies.get(SESSION_COOKIE)
        fresh = None
        if not self.sessions.known(sid):
            sid = fresh = self.sessions.new()
        request.state.sid = sid
        response = await call_next(request)
        for k, v in _HEADERS.items():
            response.headers[k] = v
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        if fresh is not None and "set-cookie" not in response.headers:
            set_cookie(response, fresh)
        return response
