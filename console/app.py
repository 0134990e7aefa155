"""The console's web application: routes, sessions, CSRF and security headers.

Server-rendered HTML (Jinja2, autoescaped, every control character made
visible), charts as inline SVG (:mod:`console.svg`), one small static script
that refreshes the live parts (no inline script or style: the CSP is
``default-src 'self'``). Every response carries the security headers; every
page but the static files is ``Cache-Control: no-store``. The handlers live per
page group in :mod:`console.pages`, their shared plumbing in :mod:`console.web`.

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
``/operator/stats``         takedown figures: time to removal, charts (``?since=``)
=========================  ======================================================
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from console.pages import inbox, login, operator, referral, stats
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
