"""The login pages: the token form, logging in (a new session) and out."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from console.web import form, guarded, page, set_cookie, web, who

__all__ = ["ROUTES", "home", "login", "login_form", "logout"]


async def home(request: Request) -> Response:
    """To the login form, or to the page of whoever is logged in."""
    p = who(request)
    if p is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/operator" if p.is_operator else "/inbox", status_code=303)


async def login_form(request: Request) -> Response:
    """The token form."""
    return page(request, "login.html", principals=web(request).console.tokens.principals)


async def login(request: Request) -> Response:
    """A matching token starts a new session (the old one ends); a wrong one is told so."""
    fields = await form(request)
    console = web(request).console
    address = request.client.host if request.client is not None else "unknown"
    wait = console.throttle.wait(address)
    if wait > 0:
        locked = math.ceil(wait)
        refusal = page(
            request, "login.html", 429, principals=console.tokens.principals, locked=locked
        )
        refusal.headers["Retry-After"] = str(locked)
        return refusal
    principal = console.tokens.match(fields.get("token", ""))
    if principal is None:
        console.throttle.failed(address)
        return page(request, "login.html", 401, principals=console.tokens.principals, wrong=True)
    console.throttle.succeeded(address)
    console.sessions.end(request.state.sid)
    sid = console.sessions.new(principal)
    response = RedirectResponse("/operator" if principal.is_operator else "/inbox", status_code=303)
    set_cookie(response, sid)
    return response


async def logout(request: Request) -> Response:
    """End the session and start an anonymous one."""
    await form(request)
    sessions = web(request).console.sessions
    sessions.end(request.state.sid)
    response = RedirectResponse("/login", status_code=303)
    set_cookie(response, sessions.new())
    return response


ROUTES = [
    Route("/", guarded(home)),
    Route("/login", guarded(login_form), methods=["GET"]),
    Route("/login", guarded(login), methods=["POST"]),
    Route("/logout", guarded(logout), methods=["POST"]),
]
