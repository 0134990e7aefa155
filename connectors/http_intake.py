"""HTTP intake source: a hotline's system POSTs referrals over HTTP.

Settings (``[organisations.connectors.http_intake]``)::

    host = "127.0.0.1"            # loopback by default
    port = 0                      # 0 = a free port (see ``HttpIntakeSource.port``)
    token_env = "REFERRAL_TOKEN_HL_DE"   # env var holding the bearer token
    max_body_bytes = 1048576
    max_batch = 1000

Endpoints:

``POST /referrals``
    ``Authorization: Bearer <token>``; body: one referral object or a list.
    All-or-nothing: **202** ``{"accepted": [{"referral_id", "sent"}...]}`` when
    every referral is valid (each is in the outbox; ``sent`` says the broker
    acknowledged it), else nothing is published and the answer is a JSON problem
    (RFC 9457 style: ``type``, ``title``, ``status``, ``detail``, ``problems``):
    **400** not JSON / not an object or list, **401** missing or wrong token,
    **413** body or batch too large, **422** invalid referrals, each problem as
    ``{"index", "field", "message"}``. Problems never quote the submitted values.
``GET /health``
    ``{"status": "ok", "org": ...}`` (no authentication).

The server is uvicorn in a background thread; ``open()`` returns once it listens.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import uvicorn
from pydantic import Field, SecretStr
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from broker.errors import ConfigError, ValidationFailed
from connectors.base import ConnectorConfig, Source, secret_from_env
from connectors.formats import load_json, split_problem
from connectors.publisher import Prepared, Publisher

__all__ = ["HttpIntakeConfig", "HttpIntakeSource", "build_app"]

log = logging.getLogger("referral.connectors.http_intake")


class HttpIntakeConfig(ConnectorConfig):
    """Settings of the HTTP intake."""

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    token_env: str = Field(min_length=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch: int = Field(default=1000, ge=1)


def _problem(
    status: int, title: str, detail: str, problems: list[dict[str, Any]] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if problems is not None:
        body["problems"] = problems
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def _field_problems(index: int, problems: list[str]) -> list[dict[str, Any]]:
    return [
        {"index": index, "field": where, "message": message}
        for where, message in map(split_problem, problems)
    ]


def _prepare_all(
    publisher: Publisher, items: list[Any]
) -> tuple[list[tuple[str, Prepared]], list[dict[str, Any]]]:
    prepared: list[tuple[str, Prepared]] = []
    problems: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        try:
            prepared.append((f"[{i}]", publisher.prepare(item)))
        except ValidationFailed as exc:
            problems.extend(_field_problems(i, exc.problems or [str(exc)]))
    return prepared, problems


def build_app(publisher: Publisher, token: SecretStr, config: HttpIntakeConfig) -> Starlette:
    """The Starlette app of the intake (separate from the server for tests)."""
    expected = f"Bearer {token.get_secret_value()}".encode()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "org": publisher.org.id})

    async def referrals(request: Request) -> JSONResponse:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _problem(401, "Unauthorized", "a valid bearer token is required")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            return _problem(413, "Payload Too Large", f"body exceeds {config.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > config.max_body_bytes:
                return _problem(
                    413, "Payload Too Large", f"body exceeds {config.max_body_bytes} bytes"
                )
        try:
            data = load_json(bytes(body))
        except ValidationFailed as exc:
            return _problem(400, "Bad Request", f"body is {exc}")
        items = data if isinstance(data, list) else [data]
        if not all(isinstance(i, dict) for i in items) or not items:
            return _problem(
                400, "Bad Request", "body must be a referral object or a non-empty list"
            )
        if len(items) > config.max_batch:
            return _problem(413, "Payload Too Large", f"batch exceeds {config.max_batch} referrals")
        prepared, problems = await run_in_threadpool(_prepare_all, publisher, items)
        if problems:
            return _problem(
                422,
                "Unprocessable Content",
                f"{len({p['index'] for p in problems})} of {len(items)} referral(s) invalid; "
                "nothing was published",
                problems,
            )
        result = await run_in_threadpool(publisher.publish_prepared, prepared)
        return JSONResponse(
            {
                "accepted": [
                    {"referral_id": p.referral_id, "sent": p.sent, "repeat": p.repeat}
                    for p in result.published
                ]
            },
            status_code=202,
        )

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/referrals", referrals, methods=["POST"]),
        ]
    )


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the runtime owns the signals
        pass


class HttpIntakeSource(Source):
    """Serves ``POST /referrals`` in a background thread."""

    kind = "http_intake"
    poll_interval = 1.0

    def __init__(
        self, config: HttpIntakeConfig, publisher: Publisher, env: Mapping[str, str]
    ) -> None:
        self.config = config
        self.publisher = publisher
        self._token = secret_from_env(env, config.token_env, "http_intake.token_env")
        self.app = build_app(publisher, self._token, config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self.port is None:
            raise ConfigError("http_intake: not started")
        return f"http://{self.config.host}:{self.port}"

    def open(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it listens; ``port`` is then the bound port."""
        cfg = uvicorn.Config(
            self.app,
            host=self.config.host,
            port=self.config.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._server = _Server(cfg)
        self._thread = threading.Thread(target=self._server.run, name="http-intake", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"http_intake: cannot listen on {self.config.host}:{self.config.port}"
                )
            time.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        self.port = int(sockets[0].getsockname()[1])
        log.info("http intake of %s listening on port %d", self.publisher.org.id, self.port)

    def poll(self) -> int:
        """Nothing to poll: requests are served by the server thread."""
        return 0

    def close(self) -> None:
        """Stop the server and wait for its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = None
        self._thread = None
