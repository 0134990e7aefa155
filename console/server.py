"""Serving the console: uvicorn in a background thread, on loopback unless told otherwise."""

from __future__ import annotations

import os
from collections.abc import Mapping

from broker.config import Settings
from broker.errors import ConfigError
from broker.network import Network
from broker.wire.codec import Codec
from connectors.serving import ThreadedServer
from console.app import Console, build_app
from console.auth import OPERATOR, Sessions, Tokens, token_env
from console.liaison import LiaisonDesk
from console.operator import OperatorDesk
from console.throttle import MIN_TOKEN_LENGTH, TOKEN_HINT

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ConsoleServer", "make_console"]

#: Loopback only, unless ``--host`` says otherwise.
DEFAULT_HOST = "127.0.0.1"
#: The console's default port.
DEFAULT_PORT = 8780
#: Host names a loopback console answers to (any other ``Host`` header is refused).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def make_console(
    settings: Settings,
    network: Network,
    org: str | None,
    env: Mapping[str, str] | None = None,
    codec: Codec | None = None,
) -> Console:
    """A console for ``org`` (None: the operator's view only) with tokens from ``env``."""
    env = os.environ if env is None else env
    tokens = Tokens.from_env(env, org)
    if not tokens.principals:
        wanted = ([token_env(org)] if org else []) + [token_env(OPERATOR)]
        raise ConfigError(f"no console token: set {' or '.join(wanted)}")
    weak = tokens.weak(MIN_TOKEN_LENGTH)
    if weak:
        names = ", ".join(token_env(w) for w in weak)
        raise ConfigError(
            f"console token too short: {names} must be at least {MIN_TOKEN_LENGTH} characters;"
            f" {TOKEN_HINT}"
        )
    codec = codec or Codec.from_settings(settings)
    liaison = LiaisonDesk(settings, network, org, codec) if org else None
    return Console(tokens, liaison, OperatorDesk(settings, network, codec), Sessions())


class ConsoleServer:
    """The console served by uvicorn in a thread; :meth:`start` returns once it listens."""

    def __init__(self, console: Console, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        self.console = console
        self.host = host
        self.port = port
        self._server: ThreadedServer | None = None

    @property
    def url(self) -> str:
        """The console's address."""
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout: float = 10.0) -> ConsoleServer:
        """Start serving; ``port`` is the bound port afterwards (0 picks a free one)."""
        hosts = None if self.host in ("0.0.0.0", "::") else [self.host, *LOOPBACK_NAMES]
        self._server = ThreadedServer(
            "console",
            build_app(self.console, hosts),
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            server_header=False,
            lifespan="off",
            timeout_keep_alive=5,
        )
        self.port = self._server.start(timeout)
        return self

    def stop(self) -> None:
        """Stop serving and close the desks."""
        if self._server is not None:
            self._server.stop()
        self._server = None
        if self.console.liaison is not None:
            self.console.liaison.close()
