"""The web console: a police liaison's inbox and referrals, the operator's network view.

``referral console [--org ORG] [--port N]`` serves it on loopback. The
organisation's pages (:mod:`console.liaison`) run in that organisation's own
process with its own keys; the operator's (:mod:`console.operator`) show
metadata only. Sessions, tokens and CSRF: :mod:`console.auth`; routes, headers
and templates: :mod:`console.app`; charts as inline SVG: :mod:`console.svg`.
"""

from console.app import Console, build_app
from console.auth import Principal, Sessions, Tokens, token_env

__all__ = ["Console", "Principal", "Sessions", "Tokens", "build_app", "token_env"]
