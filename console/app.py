"""The console's web application: routes, sessions, CSRF and security headers."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from console.pages import inbox, login, operator, referral, requests, stats
from console.web import CONTENT_SECURITY_POLICY, Console, Guard, Web, environment

__all__ = ["CONTENT_SECURITY_POLICY", "Console", "build_app"]


def build_app(console: Console, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The Starlette application of ``console``.

    ``allowed_hosts`` (``Host`` header values; None: any) keeps a page elsewhere from
    reaching a loopback console through a name that resolves to it (DNS rebinding).
    """
    routes = [
        *login.ROUTES,
        *inbox.ROUTES,
        *requests.ROUTES,
        *referral.ROUTES,
        *operator.ROUTES,
        *stats.ROUTES,
        Mount("/static", StaticFiles(packages=[("console", "static")]), name="static"),
    ]
    middleware = [Middleware(Guard, sessions=console.sessions)]
    if allowed_hosts is not None:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.web = Web(console, environment(console.operator.settings.topic_prefix))
    return app
