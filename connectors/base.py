"""The one base every connector kind is built on.

A connector is either a **source** (a hotline's way in: files, HTTP, the CLI) or
a **sink** (an organisation's way out: a folder, a webhook, a database). Both
have the same short lifecycle, driven by :mod:`connectors.runtime`:

``open()`` → ``poll()`` / ``deliver()`` many times → ``flush()`` → ``close()``.

Sources hand validated referrals to the shared :class:`~connectors.publisher.Publisher`;
sinks receive one :class:`Delivery` (a referral addressed to their organisation)
or one :class:`StatusDelivery` (a status update of one of the organisation's own
referrals) at a time and raise :class:`~broker.errors.DeliveryError` when the
organisation's system refuses it. Idempotency, receipts, dead letters and
offset commits are not the sink's business: the driver in
:mod:`connectors.delivery` does them the same way for every kind.

Each kind's settings (``[organisations.connectors.<kind>]`` in the network
file) are a small frozen pydantic model derived from :class:`ConnectorConfig`;
relative paths are resolved against ``settings.state_dir``.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr

from broker.config import Settings
from broker.errors import ConfigError

__all__ = [
    "ConnectorConfig",
    "Delivery",
    "Sink",
    "Source",
    "StatusDelivery",
    "StatusSink",
    "check_http_url",
    "jsonable",
    "resolve_path",
    "secret_from_env",
]


class ConnectorConfig(BaseModel):
    """Base of every connector kind's settings (frozen; unknown keys are errors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def resolve_path(settings: Settings, raw: str | Path) -> Path:
    """``raw`` as an absolute path; relative paths are under ``settings.state_dir``."""
    path = Path(raw).expanduser()
    return path if path.is_absolute() else Path(settings.state_dir) / path


def secret_from_env(env: Mapping[str, str], name: str, what: str) -> SecretStr:
    """The secret held in environment variable ``name`` (never printed)."""
    value = env.get(name, "")
    if not value:
        raise ConfigError(f"{what}: environment variable {name} is not set")
    return SecretStr(value)


def check_http_url(url: str, what: str) -> str:
    """``url`` if it is an absolute http(s) URL; ConfigError otherwise (URL not quoted)."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"{what}: not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{what}: URL must be absolute http(s)://host/...")
    return url


def jsonable(value: Any) -> Any:
    """A decoded Avro datum made JSON-ready: datetimes become ISO 8601 UTC strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.hex()
    return value


@dataclass(frozen=True)
class Delivery:
    """One referral addressed to the sink's organisation, as read from its topic."""

    referral_id: str
    case_id: str
    origin_org: str
    #: The original framed Avro bytes, exactly as the origin published them.
    value: bytes
    #: The decoded referral (``{"envelope": ..., "body": ...}``), JSON-ready.
    document: dict[str, Any]
    topic: str
    partition: int
    offset: int
    route_reason: str = ""
    #: The referral's version (``envelope.version``): above 1 for an amendment by its origin.
    version: int = 1
    #: The version this sink delivered before (None: this is its first of the referral).
    previous_version: int | None = None

    @property
    def is_amendment(self) -> bool:
        """True if this version replaces one the sink delivered before."""
        return self.previous_version is not None

    def metadata(self) -> dict[str, Any]:
        """Where the referral came from and which version it is (no payload content)."""
        meta: dict[str, Any] = {
            "referral_id": self.referral_id,
            "case_id": self.case_id,
            "origin_org": self.origin_org,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "route_reason": self.route_reason,
            "version": self.version,
        }
        if self.previous_version is not None:
            meta["previous_version"] = self.previous_version
        return meta


@dataclass(frozen=True)
class StatusDelivery:
    """One status update of one of the organisation's own referrals."""

    referral_id: str
    status: str
    emitted_by: str
    #: The decoded StatusUpdate, JSON-ready.
    document: dict[str, Any]
    topic: str = ""
    partition: int = -1
    offset: int = -1


class _Lifecycle(ABC):  # noqa: B024 - the lifecycle hooks are optional
    """open → work → flush → close; the defaults do nothing."""

    #: The kind's name in ``[organisations.connectors.<kind>]``.
    kind: ClassVar[str] = ""

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (directories, servers, connections)."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Make everything handed over so far durable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; called once, also after a failure."""


class Source(_Lifecycle):
    """A hotline's way in: turns external input into published referrals."""

    #: Seconds between two ``poll()`` calls of the runtime.
    poll_interval: float = 0.5

    @abstractmethod
    def poll(self) -> int:
        """Pick up whatever input is waiting; return how many referrals were published."""


class Sink(_Lifecycle):
    """An organisation's way out for referrals addressed to it."""

    @abstractmethod
    def deliver(self, delivery: Delivery) -> None:
        """Hand one referral to the organisation's system, or raise DeliveryError."""


class StatusSink(_Lifecycle):
    """An origin's way out for status updates of its own referrals."""

    @abstractmethod
    def deliver_status(self, status: StatusDelivery) -> None:
        """Hand one status update to the organisation's system, or raise DeliveryError."""
