"""A TLS-terminating loopback proxy for tests: TLS from clients, plain TCP to the broker."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading


class TlsProxy:
    """Listens with TLS on a loopback port and forwards the decrypted bytes to ``target``."""

    def __init__(self, target: tuple[str, int], context: ssl.SSLContext, port: int = 0) -> None:
        self.target = target
        self.context = context
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", port))
        self._server.listen(64)
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        #: Handshakes that failed (e.g. a client that does not trust the certificate).
        self.failed_handshakes = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        client.settimeout(5)
        try:
            tls = self.context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):
            with self._lock:
                self.failed_handshakes += 1
            client.close()
            return
        tls.settimeout(None)
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            tls.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets += [tls, upstream]
        threading.Thread(target=self._pump, args=(tls, upstream), daemon=True).start()
        self._pump(upstream, tls)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._stop.set()
        self._thread.join(5)
        self._server.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A TLS server context; with ``client_ca`` it requires a client certificate from that CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx
