"""HTTP intake source: a hotline's system POSTs referrals over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import Field, SecretStr
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker.contracts import Source
from broker.errors import ConfigError, ValidationFailed
from broker.origin.publisher import BatchResult, Prepared, Publisher, Rejected
from connectors.base import ConnectorConfig, secret_from_env
from connectors.formats import json_rows, load_json, normalise, split_problem
from connectors.http_guard import PER_ADDRESS, ConnectionGuard, guarded_h11
from connectors.idempotency import IdempotencyKeys, valid_key
from connectors.serving import ThreadedServer

__all__ = ["HttpIntakeConfig", "HttpIntakeSource", "build_app"]

log = logging.getLogger("referral.connectors.http_intake")

#: The answers an Idempotency-Key replays (they depend on the body alone).
_REPLAYED = frozenset({202, 409, 422})


class HttpIntakeConfig(ConnectorConfig):
    """Settings of the HTTP intake."""

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    token_env: str = Field(min_length=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch: int = Field(default=1000, ge=1)
    header_timeout: float = Field(default=10.0, gt=0, le=600)
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    max_connections: int = Field(default=64, ge=1, le=10000)
    max_connections_per_address: int = Field(default=PER_ADDRESS, ge=1, le=10000)
    idempotency_ttl: float = Field(default=86400.0, gt=0)


def _problem(
    status: int,
    title: str,
    detail: str,
    problems: list[dict[str, Any]] | None = None,
    *,
    close: bool = False,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if problems is not None:
        body["problems"] = problems
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if close:  # the client may still be sending: do not wait for the rest of its body
        headers["Connection"] = "close"
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def _field_problems(index: int, problems: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"index": index, "field": where, "message": message}
        for where, message in map(split_problem, problems)
    ]


def _index(label: str) -> int:
    """The list position of a row label (``[3]`` → 3; a single object is 0)."""
    return int(label[1:-1]) if label.startswith("[") else 0


def _prepare_all(
    publisher: Publisher, rows: list[tuple[str, Any]]
) -> tuple[list[tuple[str, Prepared]], list[dict[str, Any]]]:
    prepared: list[tuple[str, Prepared]] = []
    problems: list[dict[str, Any]] = []
    for label, item in rows:
        try:
            prepared.append((label, publisher.prepare(item)))
        except ValidationFailed as exc:
            problems.extend(_field_problems(_index(label), exc.problems or [str(exc)]))
    return prepared, problems


def _conflict(rejected: list[Rejected], result: BatchResult | None = None) -> JSONResponse:
    problems = [p for r in rejected for p in _field_problems(_index(r.label), r.problems)]
    response = _problem(
        409,
        "Conflict",
        f"{len(rejected)} referral(s) already published with other content (amendments)",
        problems,
    )
    if result is not None and result.published:  # a concurrent publisher got in between
        response = _problem(
            409,
            "Conflict",
            f"{len(rejected)} referral(s) already published with other content (amendments); "
            f"{len(result.published)} other(s) accepted",
            problems,
        )
    return response


def _accepted(result: BatchResult) -> JSONResponse:
    return JSONResponse(
        {
            "accepted": [
                {"referral_id": p.referral_id, "sent": p.sent, "repeat": p.repeat}
                for p in result.published
            ]
        },
        status_code=202,
    )


class _Intake:
    """The intake's request handlers over one publisher, token and configuration."""

    def __init__(
        self,
        publisher: Publisher,
        token: SecretStr,
        config: HttpIntakeConfig,
        keys: IdempotencyKeys | None,
        guard: ConnectionGuard | None,
    ) -> None:
        self.publisher = publisher
        self.config = config
        self.keys = keys
        self.guard = guard
        self.expected = f"Bearer {token.get_secret_value()}".encode()
        self.too_large = f"body exceeds {config.max_body_bytes} bytes"

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "org": self.publisher.org.id})

    async def read_body(self, request: Request) -> bytes | JSONResponse:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_body_bytes:
            return _problem(413, "Payload Too Large", self.too_large, close=True)
        body = bytearray()
        try:
            async with asyncio.timeout(self.config.body_timeout):
                async for chunk in request.stream():
                    body.extend(chunk)
                    if len(body) > self.config.max_body_bytes:
                        return _problem(413, "Payload Too Large", self.too_large, close=True)
        except TimeoutError:
            return _problem(
                408,
                "Request Timeout",
                f"body not received in {self.config.body_timeout:g}s",
                close=True,
            )
        return bytes(body)

    async def process(self, body: bytes) -> JSONResponse:
        try:
            data = load_json(body)
        except ValidationFailed as exc:
            return _problem(400, "Bad Request", f"body: {exc}")
        items = data if isinstance(data, list) else [data]
        if not all(isinstance(i, dict) for i in items) or not items:
            return _problem(
                400, "Bad Request", "body must be a referral object or a non-empty list"
            )
        if len(items) > self.config.max_batch:
            return _problem(
                413, "Payload Too Large", f"batch exceeds {self.config.max_batch} referrals"
            )
        rows = json_rows(data) if isinstance(data, list) else [("[0]", normalise(data))]
        prepared, problems = await run_in_threadpool(_prepare_all, self.publisher, rows)
        if problems:
            return _problem(
                422,
                "Unprocessable Content",
                f"{len({p['index'] for p in problems})} of {len(items)} referral(s) invalid; "
                "nothing was published",
                problems,
            )
        amendments = await run_in_threadpool(self.publisher.conflicts, prepared)
        if amendments:
            return _conflict(amendments)
        result = await run_in_threadpool(self.publisher.publish_prepared, prepared)
        if result.rejected:
            return _conflict(result.rejected, result)
        return _accepted(result)

    async def once(
        self, key: str, body: bytes, handle: Callable[[bytes], Awaitable[JSONResponse]]
    ) -> Response:
        assert self.keys is not None
        claim = await run_in_threadpool(self.keys.claim, key, hashlib.sha256(body).hexdigest())
        if claim.state == "replay":
            return Response(
                claim.answer,
                status_code=claim.status,
                media_type=claim.content_type,
                headers={"Idempotent-Replayed": "true"},
            )
        if claim.state == "mismatch":
            return _problem(409, "Conflict", "this Idempotency-Key was used with another body")
        if claim.state == "busy":
            return _problem(
                409, "Conflict", "a request with this Idempotency-Key is still being processed"
            )
        response: JSONResponse | None = None
        try:
            response = await handle(body)
        finally:
            if response is not None and response.status_code in _REPLAYED:
                await run_in_threadpool(
                    self.keys.answer,
                    key,
                    response.status_code,
                    response.media_type or "application/json",
                    bytes(response.body),
                )
            else:
                await run_in_threadpool(self.keys.release, key)
        return response

    async def referrals(self, request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self.expected):
            return _problem(401, "Unauthorized", "a valid bearer token is required")
        if self.guard is not None:
            self.guard.prove(request.client)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return _problem(415, "Unsupported Media Type", "the body must be application/json")
        key = request.headers.get("idempotency-key")
        if key is not None and (self.keys is None or not valid_key(key)):
            return _problem(
                400, "Bad Request", "Idempotency-Key must be 1 to 255 visible ASCII characters"
            )
        try:
            body = await self.read_body(request)
        except ClientDisconnect:
            return _problem(400, "Bad Request", "the client went away")
        if isinstance(body, JSONResponse):
            return body
        try:
            if key is not None:
                return await self.once(key, body, self.process)
            return await self.process(body)
        except Exception:  # never a traceback to the client
            log.exception("http intake: unexpected failure")
            return _problem(500, "Internal Server Error", "the referral was not processed")


def build_app(
    publisher: Publisher,
    token: SecretStr,
    config: HttpIntakeConfig,
    keys: IdempotencyKeys | None = None,
    guard: ConnectionGuard | None = None,
) -> Starlette:
    """The Starlette app of the intake (separate from the server for tests); it tells
    ``guard`` which connections carried the right token."""
    intake = _Intake(publisher, token, config, keys, guard)
    return Starlette(
        routes=[
            Route("/health", intake.health, methods=["GET"]),
            Route("/referrals", intake.referrals, methods=["POST"]),
        ]
    )


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
        self.keys = IdempotencyKeys(
            publisher.settings.org_dir(publisher.org.id) / "http_intake.sqlite3",
            ttl=config.idempotency_ttl,
        )
        self.guard = ConnectionGuard(config.max_connections, config.max_connections_per_address)
        self.app = build_app(publisher, self._token, config, self.keys, self.guard)
        self._server: ThreadedServer | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self.port is None:
            raise ConfigError("http_intake: not started")
        return f"http://{self.config.host}:{self.port}"

    def open(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it listens; ``port`` is then the bound port."""
        self._server = ThreadedServer(
            "http_intake",
            self.app,
            host=self.config.host,
            port=self.config.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http=guarded_h11(self.config.header_timeout, self.config.max_connections, self.guard),
            timeout_keep_alive=5,
        )
        self.port = self._server.start(timeout)
        log.info("http intake of %s listening on port %d", self.publisher.org.id, self.port)

    def poll(self) -> int:
        """Nothing to poll: requests are served by the server thread."""
        return 0

    def close(self) -> None:
        """Stop the server and wait for its thread."""
        if self._server is not None:
            self._server.stop()
        self._server = None
        self.keys.close()
