"""Who may see what: tokens from the environment, server-side sessions, CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import SecretStr

__all__ = [
    "ANONYMOUS_SECONDS",
    "MAX_ANONYMOUS",
    "OPERATOR",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "Principal",
    "Sessions",
    "Tokens",
    "token_env",
]

#: The principal id of the operator (organisation ids never take it: they name an org).
OPERATOR = "operator"
#: Name of the session cookie.
SESSION_COOKIE = "rb_session"
#: A session ends this long after login.
SESSION_SECONDS = 8 * 3600
#: An anonymous session (the login form's) ends sooner; at most this many are kept.
ANONYMOUS_SECONDS = 3600
MAX_ANONYMOUS = 10_000


def token_env(principal: str) -> str:
    """The environment variable holding ``principal``'s console token.

    ``police-nl`` → ``REFERRAL_CONSOLE_TOKEN_POLICE_NL``; the operator's is
    ``REFERRAL_CONSOLE_TOKEN_OPERATOR``.
    """
    return "REFERRAL_CONSOLE_TOKEN_" + re.sub(r"[^A-Z0-9]", "_", principal.upper())


@dataclass(frozen=True)
class Principal:
    """Who a session belongs to: one organisation's liaison, or the operator."""

    id: str

    @property
    def is_operator(self) -> bool:
        """True for the operator (metadata only, never case content)."""
        return self.id == OPERATOR


class Tokens:
    """The tokens this console accepts: the organisation's (if any) and the operator's."""

    def __init__(self, by_principal: Mapping[str, SecretStr]) -> None:
        self._tokens = dict(by_principal)

    @classmethod
    def from_env(cls, env: Mapping[str, str], org: str | None) -> Tokens:
        """Read the tokens of ``org`` and of the operator; a missing variable closes that view."""
        found: dict[str, SecretStr] = {}
        for who in ([org] if org else []) + [OPERATOR]:
            value = env.get(token_env(who), "")
            if value:
                found[who] = SecretStr(value)
        return cls(found)

    def weak(self, shortest: int) -> list[str]:
        """The principals whose token is shorter than ``shortest`` characters."""
        return sorted(w for w, t in self._tokens.items() if len(t.get_secret_value()) < shortest)

    @property
    def principals(self) -> list[str]:
        """The principals that can log in."""
        return sorted(self._tokens)

    def match(self, token: str) -> Principal | None:
        """The principal whose token this is (compared in constant time), or None."""
        given = token.strip().encode()
        found = None
        for who, secret in self._tokens.items():
            if hmac.compare_digest(given, secret.get_secret_value().encode()):
                found = Principal(who)
        return found


@dataclass
class _Session:
    principal: Principal | None
    expires: float


class Sessions:
    """Server-side sessions keyed by a random cookie value (thread-safe, in memory)."""

    def __init__(self, lifetime: float = SESSION_SECONDS) -> None:
        self._secret = secrets.token_bytes(32)
        self._lifetime = lifetime
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def new(self, principal: Principal | None = None) -> str:
        """A fresh session id (anonymous until a login binds a principal to a new one)."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            live = {k: s for k, s in self._sessions.items() if s.expires > now}
            anonymous = [k for k, s in live.items() if s.principal is None]
            for k in anonymous[: max(0, len(anonymous) - MAX_ANONYMOUS + 1)]:
                del live[k]  # the oldest first: dicts keep insertion order
            lifetime = (
                self._lifetime if principal is not None else min(self._lifetime, ANONYMOUS_SECONDS)
            )
            live[sid] = _Session(principal, now + lifetime)
            self._sessions = live
        return sid

    def principal(self, sid: str | None) -> Principal | None:
        """The principal of a live session, or None."""
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is None or session.expires <= time.time():
                return None
            return session.principal

    def known(self, sid: str | None) -> bool:
        """True if ``sid`` names a live session (logged in or not)."""
        if not sid:
            return False
        with self._lock:
            session = self._sessions.get(sid)
            return session is not None and session.expires > time.time()

    def end(self, sid: str | None) -> None:
        """Forget a session (logout)."""
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)

    def csrf(self, sid: str) -> str:
        """The CSRF token of session ``sid`` (an HMAC under this process's secret)."""
        return hmac.new(self._secret, sid.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, sid: str | None, token: str | None) -> bool:
        """True only for a live session and its own CSRF token."""
        if not sid or not token or not self.known(sid):
            return False
        return hmac.compare_digest(self.csrf(sid).encode(), token.encode())
