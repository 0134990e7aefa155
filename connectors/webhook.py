"""Webhook sink: POST each referral to the organisation's case system, signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr

from broker.config import Settings
from broker.contracts import Delivery, Sink
from broker.errors import DeliveryError
from connectors.base import ConnectorConfig, check_http_url, secret_from_env
from connectors.inbox_folder import delivery_document

__all__ = [
    "SIGNATURE_HEADER",
    "PostingSink",
    "SignedPoster",
    "WebhookConfig",
    "WebhookSink",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Referral-Signature"


class WebhookConfig(ConnectorConfig):
    """Settings of a webhook (also used by the status webhook)."""

    url: str = Field(min_length=1)
    secret_env: str = Field(min_length=1)
    timeout: float = Field(default=10.0, gt=0, le=300)
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_initial: float = Field(default=0.5, ge=0, le=60)
    backoff_max: float = Field(default=30.0, ge=0, le=3600)


def sign(secret: SecretStr, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=<hex>``."""
    mac = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: SecretStr, body: bytes, header: str | None) -> bool:
    """True if ``header`` is the right signature of ``body`` (constant-time compare)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


class SignedPoster:
    """POSTs signed JSON with retries; shared by the referral and status webhooks."""

    def __init__(
        self,
        config: WebhookConfig,
        secret: SecretStr,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.url = check_http_url(config.url, "webhook.url")
        self._secret = secret
        self._transport = transport
        self._client: httpx.Client | None = None
        #: Set to abort backoff waits at shutdown.
        self.cancel = sleep or threading.Event()
        self.attempts = 0

    def open(self) -> None:
        """Create the HTTP client."""
        self.cancel.clear()
        self._client = httpx.Client(timeout=self.config.timeout, transport=self._transport)

    def close(self) -> None:
        """Close the HTTP client."""
        self.cancel.set()
        if self._client is not None:
            self._client.close()
            self._client = None

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): full jitter."""
        ceiling = min(self.config.backoff_max, self.config.backoff_initial * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)

    def post(
        self,
        document: Mapping[str, Any],
        referral_id: str,
        what: str,
        *,
        version: int | None = None,
        idempotency: str | None = None,
    ) -> int:
        """POST ``document``; the final status code, or DeliveryError."""
        if self._client is None:
            self.open()
        assert self._client is not None
        body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            "X-Referral-Id": referral_id,
            "Idempotency-Key": referral_id,
        }
        if version is not None:
            headers["X-Referral-Version"] = str(version)
            if version > 1:
                headers["Idempotency-Key"] = f"{referral_id}.v{version}"
        if idempotency is not None:
            headers["Idempotency-Key"] = idempotency
        last = "no attempt"
        for attempt in range(1, self.config.max_attempts + 1):
            self.attempts += 1
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except httpx.TimeoutException:
                last = "timeout"
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__})"
            else:
                code = response.status_code
                if 200 <= code < 300:
                    return code
                if 400 <= code < 500:
                    raise DeliveryError(
                        f"{what}: refused with HTTP {code} (not retried)",
                        permanent=True,
                        reason=f"HTTP_{code}",
                    )
                last = f"HTTP {code}"
            if attempt < self.config.max_attempts and self.cancel.wait(self.backoff(attempt)):
                break
        raise DeliveryError(f"{what}: gave up after {self.config.max_attempts} attempt(s): {last}")


class PostingSink:
    """Lifecycle of a sink that POSTs through one :class:`SignedPoster` (mixin).

    Shared by the referral webhook and the status webhook; the secret is read
    from ``config.secret_env`` and reported as ``<kind>.secret_env`` if missing.
    ``settings`` is unused: every sink kind is built from ``(config, settings, ...)``.
    """

    kind: ClassVar[str] = ""

    def __init__(
        self,
        config: WebhookConfig,
        settings: Settings,
        env: Mapping[str, str],
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.poster = SignedPoster(
            config,
            secret_from_env(env, config.secret_env, f"{self.kind}.secret_env"),
            transport=transport,
        )

    def open(self) -> None:
        """Create the HTTP client."""
        self.poster.open()

    def close(self) -> None:
        """Close the HTTP client."""
        self.poster.close()


class WebhookSink(PostingSink, Sink):
    """POSTs each referral to the organisation's case system."""

    kind = "webhook"

    def deliver(self, delivery: Delivery) -> None:
        """POST the referral; DeliveryError once it finally fails."""
        self.poster.post(
            delivery_document(delivery), delivery.referral_id, "webhook", version=delivery.version
        )

    def erase(self, origin_org: str, referral_id: str) -> int:
        """POST an erase request (``{"erase": ...}``, signed like a delivery); 1 once answered 2xx.

        The case system deletes the referral and its history; a 4xx is a refusal
        (DeliveryError, permanent), anything else is retried as a delivery is.
        """
        document = {"erase": {"origin_org": origin_org, "referral_id": referral_id}}
        self.poster.post(document, referral_id, "webhook erase", idempotency=f"{referral_id}.erase")
        return 1
