"""An ASGI app served by uvicorn in a background thread (the HTTP intake, the web console)."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from broker.errors import ConfigError

__all__ = ["ThreadedServer"]


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the caller's process owns the signals
        pass


class ThreadedServer:
    """uvicorn serving one app in a daemon thread; :meth:`start` returns once it listens.

    ``name`` names the thread and the one-line error when it cannot listen;
    ``config`` is passed to :class:`uvicorn.Config` as it is (``host`` and ``port``
    among it: port 0 picks a free one, read back as :attr:`port`).
    """

    def __init__(self, name: str, app: Any, **config: Any) -> None:
        self.name = name
        self._config = uvicorn.Config(app, **config)
        self.host = str(config.get("host", "127.0.0.1"))
        self.port = int(config.get("port", 0))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> int:
        """Start serving; the bound port (also :attr:`port`)."""
        server = self._server = _Server(self._config)
        self._thread = threading.Thread(target=server.run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"{self.name}: cannot listen on {self.host}:{self.port}")
            time.sleep(0.02)
        sockets = [s for srv in server.servers for s in srv.sockets]
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit and wait for its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None
        self._thread = None
