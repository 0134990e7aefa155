"""Status sinks (the origin side): where a hotline hears back about its referrals."""

from __future__ import annotations

import json

from pydantic import Field

from broker.config import Settings
from broker.contracts import StatusDelivery, StatusSink
from broker.errors import DeliveryError
from broker.private import append_private, private_dir
from connectors.base import ConnectorConfig, resolve_path
from connectors.webhook import PostingSink

__all__ = ["StatusFolderConfig", "StatusFolderSink", "StatusWebhookSink"]


class StatusFolderConfig(ConnectorConfig):
    """Settings of a status folder."""

    path: str = Field(min_length=1)


class StatusFolderSink(StatusSink):
    """Appends each status update as one JSON line to ``<referral_id>.jsonl``."""

    kind = "status_folder"

    def __init__(self, config: StatusFolderConfig, settings: Settings) -> None:
        self.config = config
        self.path = resolve_path(settings, config.path)

    def open(self) -> None:
        """Create the folder if it is missing."""
        private_dir(self.path, f"{self.kind}.path")

    def deliver_status(self, status: StatusDelivery) -> None:
        """Append the update's line (synced before returning)."""
        line = json.dumps(status.document, sort_keys=True, separators=(",", ":")) + "\n"
        try:
            append_private(self.path / f"{status.referral_id}.jsonl", line.encode())
        except OSError as exc:
            raise DeliveryError(
                f"status folder: cannot append for referral {status.referral_id}: {exc.strerror}"
            ) from exc

    def erase_statuses(self, referral_id: str) -> int:
        """Delete ``<referral_id>.jsonl``."""
        try:
            (self.path / f"{referral_id}.jsonl").unlink()
        except FileNotFoundError:
            return 0
        return 1


class StatusWebhookSink(PostingSink, StatusSink):
    """POSTs each status update, signed, to the origin's system."""

    kind = "status_webhook"

    def deliver_status(self, status: StatusDelivery) -> None:
        """POST the status update; DeliveryError once it finally fails."""
        self.poster.post(status.document, status.referral_id, "status webhook")
