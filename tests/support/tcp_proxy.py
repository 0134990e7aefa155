"""A loopback TCP proxy for tests: forwards bytes, and can cut every connection."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class TcpProxy:
    """Listens on a free loopback port and forwards to ``target``; :meth:`cut` drops all."""

    def __init__(self, target: tuple[str, int], listen_port: int = 0) -> None:
        self.target = target
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", listen_port))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._accepting = threading.Event()
        self._accepting.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._server, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.1):
                if key.fileobj is self._server:
                    client, _ = self._server.accept()
                    if not self._accepting.is_set():
                        client.close()
                        continue
                    try:
                        upstream = socket.create_connection(self.target, timeout=2)
                    except OSError:
                        client.close()
                        continue
                    with self._lock:
                        self._pairs.append((client, upstream))
                    sel.register(client, selectors.EVENT_READ, upstream)
                    sel.register(upstream, selectors.EVENT_READ, client)
                else:
                    src = key.fileobj
                    dst = key.data
                    assert isinstance(src, socket.socket)
                    try:
                        data = src.recv(65536)
                        if data:
                            dst.sendall(data)
                            continue
                    except OSError:
                        pass
                    for s in (src, dst):
                        with contextlib.suppress(KeyError, ValueError):
                            sel.unregister(s)
                        s.close()
            with self._lock:
                dead = [p for p in self._pairs if p[0].fileno() == -1 or p[1].fileno() == -1]
                for pair in dead:
                    for s in pair:
                        with contextlib.suppress(KeyError, ValueError):
                            sel.unregister(s)
                        s.close()
                    self._pairs.remove(pair)
        sel.close()

    def cut(self) -> None:
        """Close every open connection and refuse new ones until :meth:`restore`."""
        self._accepting.clear()
        with self._lock:
            for pair in self._pairs:
                for s in pair:
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        """Accept connections again."""
        self._accepting.set()

    def close(self) -> None:
        """Stop the proxy."""
        self._stop.set()
        self._thread.join(5)
        self.cut()
        self._server.close()
