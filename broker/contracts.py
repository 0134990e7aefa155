"""What a connector kind implements and what the engines hand it: sources, sinks, deliveries.

The lifecycle and the contract are specified in connectors/README.md ("Writing a kind").
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "Delivery",
    "Sink",
    "Source",
    "StatusDelivery",
    "StatusSink",
    "Withdrawal",
    "jsonable",
]


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
class Withdrawal:
    """The origin's signed word that a referral it sent this organisation no longer concerns it.

    Sent when an amendment drops the organisation from the referral's recipients;
    ``version`` is the version withdrawn.
    """

    referral_id: str
    case_id: str
    origin_org: str
    version: int
    #: When the origin withdrew it (UTC, ISO 8601).
    withdrawn_at: str
    topic: str
    partition: int
    offset: int

    def metadata(self) -> dict[str, Any]:
        """What a sink records of the withdrawal (no case content)."""
        return {
            "referral_id": self.referral_id,
            "case_id": self.case_id,
            "origin_org": self.origin_org,
            "withdrawn_version": self.version,
            "withdrawn_at": self.withdrawn_at,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }


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

    def erase(self, origin_org: str, referral_id: str) -> int:
        """Remove every copy of one referral the kind keeps (its history too); how many.

        A kind that keeps content overrides it; DeliveryError if it cannot erase now.
        """
        return 0

    def withdraw(self, withdrawal: Withdrawal) -> None:
        """Mark a delivered referral withdrawn by its origin (default: nothing to mark)."""


class StatusSink(_Lifecycle):
    """An origin's way out for status updates of its own referrals."""

    @abstractmethod
    def deliver_status(self, status: StatusDelivery) -> None:
        """Hand one status update to the organisation's system, or raise DeliveryError."""

    def erase_statuses(self, referral_id: str) -> int:
        """Remove what the kind kept of one referral's status updates; how many copies."""
        return 0
